# The harness image: the Claude API emulator (default command), the Locust master and workers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependency metadata first so the install layer is cached until it changes.
# README.md is the project's declared readme (pyproject.toml), needed to build the package.
COPY pyproject.toml constraints.txt README.md ./
COPY harness/ harness/
COPY locustfile.py ./
COPY scenarios/ scenarios/

# Installed in place, as `make install` does: the harness runs from /app, where pip builds its C
# part (harness/_loopread.c, the fast transport's per-read path) with a compiler removed after.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install -c constraints.txt -e . \
    && python -c "import harness._loopread" \
    && apt-get purge -y --auto-remove gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin harness \
    && mkdir -p /app/runs \
    && chown harness:harness /app/runs

USER harness

# 8000 emulator, 8089 Locust web UI, 5557 Locust master <-> workers.
EXPOSE 8000 8089 5557

CMD ["python", "-m", "harness.emulator", "--host", "0.0.0.0", "--port", "8000"]
