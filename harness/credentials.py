"""Where secrets come from and where they may go.

Every secret is read from this process's environment (or its own command line), never from a
message, a form or a file in the repository, and is sent only where the operator pointed it at
start-up:
- the API key (`ANTHROPIC_API_KEY`) goes only to the host given at start-up (`--host`); any
  other host a run may use (the built-in emulator, a loopback host chosen in the web UI) gets
  the emulator's placeholder key;
- a bearer token (`ANTHROPIC_AUTH_TOKEN`, as the SDK reads it, for gateways that want
  `Authorization`) and the values of a scenario's `headers` taken from the environment
  (`${GATEWAY_TOKEN}`) follow the same rule as the key; a header's value written in the scenario
  is sent as written, and shown in no output;
- the web UI's login (`CLAUDE_LOADTEST_WEB_USER`, `CLAUDE_LOADTEST_WEB_PASSWORD`);
- the secret workers prove to join a master (`CLAUDE_LOADTEST_WORKER_SECRET`);
- the InfluxDB token (`--influx-token` or `INFLUXDB_V2_TOKEN`) stays in the process that read
  it: Locust's spawn messages copy every option to the workers, so the option is emptied at
  start-up (`take_influx_token`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from typing import Any
from urllib.parse import urlsplit

API_KEY_ENV = "ANTHROPIC_API_KEY"
AUTH_TOKEN_ENV = "ANTHROPIC_AUTH_TOKEN"
RESERVED_HEADERS = frozenset(
    ("x-api-key", "authorization", "anthropic-version", "anthropic-beta", "content-type", "content-length", "host")
)
REDACTED = "<redacted>"
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # what an HTTP/1.1 header value can carry: no line break, no control character
WEB_USER_ENV = "CLAUDE_LOADTEST_WEB_USER"
WEB_PASSWORD_ENV = "CLAUDE_LOADTEST_WEB_PASSWORD"
WORKER_SECRET_ENV = "CLAUDE_LOADTEST_WORKER_SECRET"
EMULATOR_API_KEY = "emulator-key"  # the emulator accepts any key; never a real one
MIN_PASSWORD_CHARS = 12
MIN_SECRET_CHARS = 16
MAKE_SECRET = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"


class CredentialsError(Exception):
    """A secret the configuration needs is missing or too weak (a usage error: exit 2)."""


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback IP address (v4 or v6, brackets allowed)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback(url: str) -> bool:
    """Whether a base URL points at this machine's loopback interface."""
    return is_loopback_host(urlsplit(url).hostname or "")


def origin(url: str) -> tuple[str, str, int | None, str]:
    """What identifies a target: scheme, host, port (default filled in) and path."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/")


def same_target(url: str, other: str | None) -> bool:
    return other is not None and origin(url) == origin(other)


def api_key_for(host: str, startup_host: str | None, placeholder: bool = True) -> str:
    """The key a run against `host` sends: the real one only to the host given at start-up;
    else, on loopback, the emulator's placeholder (unless `placeholder` is off: a bearer token
    authenticates)."""
    real = os.environ.get(API_KEY_ENV, "")
    if real and same_target(host, startup_host):
        return real
    return EMULATOR_API_KEY if placeholder and is_loopback(host) else ""


def auth_token_for(host: str, startup_host: str | None) -> str | None:
    """The bearer token a run against `host` sends (`ANTHROPIC_AUTH_TOKEN`), only to the host given at start-up."""
    token = os.environ.get(AUTH_TOKEN_ENV, "")
    return token if token and same_target(host, startup_host) else None


def header_name_ok(name: str) -> bool:
    return _HEADER_NAME.match(name) is not None


def header_value_ok(value: str) -> bool:
    return _HEADER_VALUE.fullmatch(value) is not None


def secrets_problem() -> str | None:
    """A key or token in the environment that no HTTP header can carry (a line break kept from
    the file it was read from): said at start-up, the value not shown."""
    for name in (API_KEY_ENV, AUTH_TOKEN_ENV):
        if not header_value_ok(os.environ.get(name, "")):
            return f"{name} holds a line break or another character an HTTP header cannot carry (the value is not shown)"
    return None


def checked_headers(headers: dict[str, str]) -> dict[str, str]:
    """A scenario's `headers`, checked (a ValueError says what is wrong), names in lower case."""
    checked = {}
    for name, value in headers.items():
        if not header_name_ok(name):
            raise ValueError(f"{name!r}: not a header name (letters, digits and !#$%&'*+.^_`|~-)")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(
                f"{name!r}: set by the harness (the key from {API_KEY_ENV} or {AUTH_TOKEN_ENV}, the scenario's anthropic_version and beta)"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in value) or "${" in _REFERENCE.sub("", value):
            raise ValueError(f"{name}: a value is text, with ${{NAME}} for a value from the environment")
        checked[name.lower()] = value
    return checked


def header_values(headers: dict[str, str], to_startup_host: bool) -> dict[str, str]:
    """The headers a run sends: `${NAME}` replaced by this process's environment when the target
    is the host given at start-up; elsewhere a header that needs the environment is left out.
    A missing variable raises CredentialsError."""
    sent = {}
    for name, value in headers.items():
        if _REFERENCE.search(value) and not to_startup_host:
            continue
        missing = [ref for ref in _REFERENCE.findall(value) if not os.environ.get(ref)]
        if missing:
            raise CredentialsError(f"headers.{name}: ${{{missing[0]}}} is not set in the environment")
        sent[name] = _REFERENCE.sub(lambda match: os.environ[match.group(1)], value)
        if not header_value_ok(sent[name]):
            raise CredentialsError(f"headers.{name}: the environment's value holds a line break or another character a header cannot carry")
    return sent


def shown_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers as outputs may show them: references as written, written values redacted."""
    return {name: value if _REFERENCE.fullmatch(value) else REDACTED for name, value in headers.items()}


def _required(name: str, min_chars: int, why: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise CredentialsError(f"{why}: set {name}")
    if len(value) < min_chars:
        raise CredentialsError(f"{name} must have at least {min_chars} characters (make one with: {MAKE_SECRET})")
    return value


def web_login() -> tuple[str, str]:
    """The web UI's user name and password, from the environment."""
    why = "--web-login needs a user and a password from the environment"
    user = os.environ.get(WEB_USER_ENV, "")
    if not user:
        raise CredentialsError(f"{why}: set {WEB_USER_ENV} and {WEB_PASSWORD_ENV}")
    return user, _required(WEB_PASSWORD_ENV, MIN_PASSWORD_CHARS, why)


def worker_secret() -> bytes:
    """The secret a master and its workers share, from the environment."""
    why = "a master and its workers prove a shared secret when a worker joins"
    return _required(WORKER_SECRET_ENV, MIN_SECRET_CHARS, f"{why} (the same on the master and every worker)").encode()


def take_influx_token(options: Any) -> str | None:
    """The InfluxDB token given on this process's command line, removed from its options (which
    Locust sends to every worker in its spawn messages)."""
    token = getattr(options, "influx_token", None)
    if token is not None:
        options.influx_token = None
    return token
