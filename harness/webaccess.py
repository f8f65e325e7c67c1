"""Who may reach the web UI, and what its start form may change.

- Where it listens: 127.0.0.1 unless `--web-host` names another interface, which needs
  `--web-login` (checked at start-up: exit 2). The UI speaks plain HTTP unless Locust's
  `--tls-cert`/`--tls-key` are given (README, "Security").
- The login (`--web-login`): one operator, user name and password from the environment
  (`CLAUDE_LOADTEST_WEB_USER`, `CLAUDE_LOADTEST_WEB_PASSWORD`), compared in constant time; a
  failed attempt is logged and answered after a pause, one at a time (at most one guess a
  second, however many are sent at once). Sessions are signed with a key made at
  start-up: a restart logs everyone out.
- Requests another site makes a browser send are refused (`Sec-Fetch-Site: cross-site`, or an
  `Origin` other than the UI's own on a POST), and so is, on a loopback UI, a `Host` header that
  is not a loopback name (DNS rebinding). Locust's allow-all CORS headers are removed.
- The start form (`POST /swarm`) is an allow-list: user count, spawn rate, run time, a scenario of
  those offered, and a host that is loopback or the one given at start-up (not changed while a
  test runs); the start-up checks for a real API run again for the chosen host and scenario.
  Any other non-empty field is refused with a message that names it: Locust's `/swarm` would set
  any option (output paths, the InfluxDB URL...). Empty ones are dropped. `POST /user`
  (Locust's user-class editor, which sets any attribute of a user class) is refused.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import gevent
from gevent.lock import BoundedSemaphore

from harness import credentials, locust_env
from harness.credentials import CredentialsError, is_loopback, is_loopback_host, same_target
from harness.options import LOOPBACK
from harness.scenario import ScenarioError

if TYPE_CHECKING:
    from locust.env import Environment

    from harness.load import Load

if TYPE_CHECKING:
    from harness.plugin import Session

logger = logging.getLogger("harness.webaccess")

FORM_FIELDS = ("user_count", "spawn_rate", "run_time", "host", "scenario")
FAILED_LOGIN_PAUSE_S = 1.0
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def exposed(web_host: str | None) -> bool:
    """Whether the UI listens on more than loopback (Locust reads "" and "*" as every interface)."""
    return not is_loopback_host(web_host or "*")


def required_login(options: Any) -> tuple[str, str] | None:
    """The web UI's login from the environment, or None without `--web-login`. A UI reachable
    from other machines without a login is a configuration error."""
    if not options.web_login:
        if exposed(options.web_host):
            raise CredentialsError(
                f"--web-host {options.web_host or '*'} makes the web UI reachable from other machines, and whoever "
                f"reaches it can start load on your API key: add --web-login (user and password from "
                f"{credentials.WEB_USER_ENV} and {credentials.WEB_PASSWORD_ENV}), or keep the default {LOOPBACK} "
                f"and reach it through an SSH tunnel or kubectl port-forward"
            )
        return None
    return credentials.web_login()


# --- the start form -----------------------------------------------------------------------
def form_problem(form: Any, session: Session, offered: list[str], running: bool) -> str | None:
    """Why a start form may not start (or change) a test, if it may not."""
    refused = sorted({key for key, value in form.items(multi=True) if key not in FORM_FIELDS and value})
    if refused:
        return (
            f"the start form may set only {', '.join(FORM_FIELDS)}; refused: {', '.join(refused)} (give other options on the command line)"
        )
    host = form.get("host")
    startup_host = session.startup_host
    if host is not None:
        host = host.strip()
        if any(char.isspace() or not char.isprintable() for char in host):
            return f"host {host!r} has spaces or control characters"
        if urlsplit(host).scheme not in ("http", "https") or not urlsplit(host).hostname:
            return f"host {host!r} is not an http(s) URL"
        if not (is_loopback(host) or same_target(host, startup_host)):
            allowed = f"the host given at start-up ({startup_host}) or " if startup_host else ""
            return f"host {host} is not allowed: the form accepts {allowed}a loopback address (give another with --host)"
        if running and not same_target(host, session.environment.host):
            return f"stop the test before changing the host (running against {session.environment.host})"
    path = form.get("scenario") or session.scenario.source
    if running and path != session.scenario.source:
        return f"stop the test before changing the scenario (running: {session.scenario.source})"
    if path not in offered:
        return f"scenario {path!r} is not one of the offered files: {', '.join(offered)}"
    try:
        chosen = session.read_scenario(path)
    except ScenarioError as exc:
        return f"bad scenario, the test was not started: {exc}"
    target = host or session.environment.host
    return session.real_api_problem(target, chosen) if target else None  # none: the built-in emulator


def checked_form(form: Any, load: Load | None) -> Any:
    """The form as Locust may read it: no empty field outside the allow-list (Locust would set
    it as an option), the host as it was checked (without surrounding spaces); the chosen
    scenario's `load` fills in the run time left empty, and an open loop's users are its
    max_in_flight slots whatever the form says."""
    from werkzeug.datastructures import ImmutableMultiDict

    kept = {k: v.strip() if k == "host" else v for k, v in form.items() if k in FORM_FIELDS or v}
    if load is not None and load.run_time_s and not kept.get("run_time"):
        kept["run_time"] = f"{load.run_time_s:g}s"
    if load is not None and load.open_loop:
        if kept.get("user_count") not in (None, str(load.in_flight_limit)):
            logger.info(
                "web UI: an open loop's users are load.max_in_flight (%d), not the form's %s", load.in_flight_limit, kept["user_count"]
            )
        kept["user_count"] = kept["spawn_rate"] = str(load.in_flight_limit)
    return ImmutableMultiDict(kept)


# --- requests from other sites --------------------------------------------------------------
def cross_site_problem(method: str, headers: Any, host_header: str, loopback_ui: bool) -> str | None:
    """Why a request looks like one another site made a browser send, if it does."""
    if headers.get("Sec-Fetch-Site") == "cross-site":
        return "a cross-site request"
    origin = headers.get("Origin")
    if method in UNSAFE_METHODS and origin and urlsplit(origin).netloc.lower() != host_header.lower():
        return f"a {method} from another origin ({origin})"
    if loopback_ui and not is_loopback_host(urlsplit(f"//{host_header}").hostname or ""):
        return f"Host {host_header!r} on a loopback-only UI (DNS rebinding?)"
    return None


# --- Flask -----------------------------------------------------------------------------------
def install(environment: Environment, session: Session, login: tuple[str, str] | None, offered: Any) -> None:
    """Guard the web UI: request checks, the form's allow-list, the login when one is required.
    `offered()` lists the scenario files the form offers."""
    from flask import Response, jsonify, request

    web_ui = locust_env.web_ui(environment)
    app = web_ui.app
    assert app is not None, "the web UI's Flask app exists once the UI does"
    options = locust_env.options(environment)
    loopback_ui = not exposed(options.web_host)

    def refuse(message: str, status: int = 200) -> Response:
        logger.error("web UI: refused %s %s from %s: %s", request.method, request.path, request.remote_addr, message)
        if request.endpoint == "locust.swarm":  # Locust's UI shows this message in the form
            answer = jsonify({"success": False, "message": message[:1].upper() + message[1:], "host": environment.host})
            answer.status_code = status
            return answer
        return Response(f"Refused: {message}\n", status=status, mimetype="text/plain")

    @app.before_request
    def check_request() -> Response | None:
        problem = cross_site_problem(request.method, request.headers, request.host, loopback_ui)
        if problem:
            return refuse(problem, 403)
        if request.endpoint == "locust.update_user" and request.method == "POST":
            return refuse("user classes are defined by the scenario", 403)
        if request.endpoint != "locust.swarm" or request.method != "POST":
            return None
        if login is not None and not _logged_in():
            return None  # Locust's own check answers: log in first
        runner = environment.runner
        running = getattr(runner, "state", None) in ("running", "spawning")
        problem = form_problem(request.form, session, offered(), running)
        if problem:
            return refuse(problem)
        chosen = session.read_scenario(request.form.get("scenario") or session.scenario.source)  # checked above
        request.form = checked_form(request.form, chosen.load)
        if not running:  # (Locust reads the shape at every tick of a running one)
            session.use_shape(chosen)
        return None

    app.wsgi_app = without_cors_headers(app.wsgi_app)  # type: ignore[method-assign]  # Flask's documented way to add WSGI middleware
    if login is not None:
        _install_login(web_ui, options.web_base_path, *login)


def without_cors_headers(wsgi_app: Any) -> Any:
    """Locust's Flask app allows every origin (flask-cors, on every response, errors included):
    a WSGI layer outside it drops those headers, so that no other site reads the UI's data."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [(name, value) for name, value in headers if not name.lower().startswith("access-control-")]
            return start_response(status, kept, exc_info)

        return wsgi_app(environ, start)

    return app


def _logged_in() -> bool:
    from flask_login import current_user

    return bool(current_user and current_user.is_authenticated)


def _install_login(web_ui: Any, base_path: str, user: str, password: str) -> None:
    from flask import Blueprint, redirect, request, session, url_for
    from flask_login import UserMixin, login_user

    class Operator(UserMixin):
        def __init__(self, name: str) -> None:
            self.id = name

    app = web_ui.app
    app.config.update(SECRET_KEY=secrets.token_bytes(32), SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    failing = BoundedSemaphore(1)  # failed attempts are answered one at a time, a pause each
    web_ui.login_manager.user_loader(lambda name: Operator(name) if name == user else None)
    web_ui.auth_args = {"username_password_callback": f"{base_path}/login_submit"}
    blueprint = Blueprint("claude_login", __name__, url_prefix=base_path)

    @blueprint.route("/login_submit", methods=["POST"])
    def login_submit() -> Any:
        given_user = request.form.get("username", "").encode()
        given_password = request.form.get("password", "").encode()
        # both compared, always: the time taken says nothing about which one was wrong
        user_ok = hmac.compare_digest(given_user, user.encode())
        password_ok = hmac.compare_digest(given_password, password.encode())
        if user_ok and password_ok:
            login_user(Operator(user))
            logger.info("web UI: %s logged in from %s", user, request.remote_addr)
            return redirect(url_for("locust.index"))
        logger.warning("web UI: failed login from %s", request.remote_addr)
        with failing:  # however many are sent at once: one guess per pause
            gevent.sleep(FAILED_LOGIN_PAUSE_S)
        session["auth_error"] = "Invalid user name or password"
        return redirect(url_for("locust.login"))

    app.register_blueprint(blueprint)
