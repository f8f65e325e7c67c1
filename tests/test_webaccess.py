"""Secrets' destinations, the web UI's exposure rule, its start form's allow-list and its
cross-site checks, as functions. The real UI, reached from this machine's network address, is
tested in test_security.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from werkzeug.datastructures import Headers, MultiDict

from harness import credentials
from harness.credentials import EMULATOR_API_KEY, CredentialsError, api_key_for, is_loopback, same_target
from harness.load import Load
from harness.scenario import load_scenario
from harness.webaccess import FORM_FIELDS, checked_form, cross_site_problem, exposed, form_problem, required_login

DEMO = "scenarios/demo.yaml"
OFFERED = [DEMO, "scenarios/latency-levers.yaml"]
REAL = "https://api.example.invalid"


def session(startup_host: str | None, host: str | None = None, problem: str | None = None) -> Any:
    return SimpleNamespace(
        startup_host=startup_host,
        environment=SimpleNamespace(host=host or startup_host or "http://127.0.0.1:8000"),
        scenario=SimpleNamespace(source=DEMO),
        real_api_problem=lambda host, scenario: problem,
        read_scenario=load_scenario,
    )


def form(**fields: str) -> MultiDict[str, str]:
    return MultiDict({"user_count": "2", "spawn_rate": "1", **fields})


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://127.9.9.9", True),
        ("http://localhost:1", True),
        ("http://[::1]:80", True),
        ("http://LOCALHOST", True),
        ("https://api.example.invalid", False),
        ("http://10.0.0.5:8000", False),
        ("http://127.0.0.1.evil.example", False),
        ("http://0.0.0.0:8000", False),
        ("http://[::ffff:10.0.0.1]", False),
        ("not a url", False),
    ],
)
def test_loopback_urls(url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback


def test_same_target_ignores_case_default_ports_and_a_trailing_slash() -> None:
    assert same_target("https://API.example.invalid/", "https://api.example.invalid:443")
    assert not same_target("https://api.example.invalid", "http://api.example.invalid")
    assert not same_target("https://api.example.invalid.evil.example", REAL)
    assert not same_target("https://api.example.invalid/proxy", REAL)
    assert not same_target(REAL, None)


def test_the_api_key_goes_only_to_the_host_given_at_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(credentials.API_KEY_ENV, "sk-ant-marker")
    assert api_key_for(REAL, REAL) == "sk-ant-marker"
    assert api_key_for("http://127.0.0.1:9000", REAL) == EMULATOR_API_KEY  # another loopback host: a placeholder
    assert api_key_for("http://127.0.0.1:9000", None) == EMULATOR_API_KEY  # the built-in emulator
    assert api_key_for("http://127.0.0.1:9000", "http://127.0.0.1:9000") == "sk-ant-marker"  # a local gateway given at start-up
    assert api_key_for("https://elsewhere.example", REAL) == ""
    monkeypatch.delenv(credentials.API_KEY_ENV)
    assert api_key_for("http://127.0.0.1:9000", "http://127.0.0.1:9000") == EMULATOR_API_KEY


@pytest.mark.parametrize(
    ("web_host", "is_exposed"),
    [("127.0.0.1", False), ("localhost", False), ("::1", False), ("", True), ("*", True), ("0.0.0.0", True), ("10.1.2.3", True)],
)
def test_which_web_hosts_expose_the_ui(web_host: str, is_exposed: bool) -> None:
    assert exposed(web_host) is is_exposed


def test_an_exposed_ui_needs_a_login_and_the_login_needs_strong_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (credentials.WEB_USER_ENV, credentials.WEB_PASSWORD_ENV):
        monkeypatch.delenv(name, raising=False)
    assert required_login(SimpleNamespace(web_host="127.0.0.1", web_login=False)) is None
    with pytest.raises(CredentialsError, match=r"--web-host 0\.0\.0\.0 makes the web UI reachable from other machines.*--web-login"):
        required_login(SimpleNamespace(web_host="0.0.0.0", web_login=False))
    with pytest.raises(CredentialsError, match=f"set {credentials.WEB_USER_ENV} and {credentials.WEB_PASSWORD_ENV}"):
        required_login(SimpleNamespace(web_host="127.0.0.1", web_login=True))
    monkeypatch.setenv(credentials.WEB_USER_ENV, "operator")
    monkeypatch.setenv(credentials.WEB_PASSWORD_ENV, "short")
    with pytest.raises(CredentialsError, match="at least 12 characters"):
        required_login(SimpleNamespace(web_host="0.0.0.0", web_login=True))
    monkeypatch.setenv(credentials.WEB_PASSWORD_ENV, "long-enough-password")
    assert required_login(SimpleNamespace(web_host="0.0.0.0", web_login=True)) == ("operator", "long-enough-password")


def test_the_worker_secret_is_required_and_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(credentials.WORKER_SECRET_ENV, raising=False)
    with pytest.raises(CredentialsError, match=f"set {credentials.WORKER_SECRET_ENV}"):
        credentials.worker_secret()
    monkeypatch.setenv(credentials.WORKER_SECRET_ENV, "x" * 15)
    with pytest.raises(CredentialsError, match="at least 16 characters"):
        credentials.worker_secret()
    monkeypatch.setenv(credentials.WORKER_SECRET_ENV, "x" * 16)
    assert credentials.worker_secret() == b"x" * 16


def test_the_influx_token_leaves_the_options_locust_sends_to_workers() -> None:
    options = SimpleNamespace(influx_token="token-marker")
    assert credentials.take_influx_token(options) == "token-marker" and options.influx_token is None
    assert credentials.take_influx_token(SimpleNamespace(influx_token=None)) is None


# --- the start form -------------------------------------------------------------------------
def test_the_form_may_start_with_the_allowed_fields() -> None:
    assert form_problem(form(host="http://127.0.0.1:8000", run_time="30s", scenario=DEMO), session(None), OFFERED, False) is None
    assert form_problem(form(host=REAL + "/"), session(REAL), OFFERED, False) is None


@pytest.mark.parametrize(
    "field",
    ["influx_url", "csv_prefix", "html_file", "json_file", "logfile", "stop_timeout", "output_dir", "report", "user_classes", "profile"],
)
def test_every_other_field_is_refused_by_name(field: str) -> None:
    problem = form_problem(form(**{field: "/tmp/x"}), session(None), OFFERED, False)
    assert problem is not None and f"refused: {field}" in problem and ", ".join(FORM_FIELDS) in problem


def test_empty_fields_outside_the_allow_list_are_dropped_not_refused() -> None:
    posted = form(profile="", influx_url="")
    assert form_problem(posted, session(None), OFFERED, False) is None
    assert sorted(checked_form(posted, None)) == ["spawn_rate", "user_count"]
    assert checked_form(form(host=" http://127.0.0.1:8000 \n"), None)["host"] == "http://127.0.0.1:8000"


def test_the_first_of_two_values_is_the_one_checked_and_kept() -> None:
    posted = MultiDict([("host", "http://127.0.0.1:8000"), ("host", "http://evil.example"), ("user_count", "1")])
    assert checked_form(posted, None)["host"] == posted["host"] == "http://127.0.0.1:8000"


def test_the_chosen_scenarios_load_fills_the_form() -> None:
    """The run time the form leaves empty comes from the scenario; an open loop's users are its slots."""
    closed = Load.model_validate({"users": 4, "run_time": "2m"})
    assert checked_form(form(run_time=""), closed)["run_time"] == "120s"
    assert checked_form(form(run_time="30s"), closed)["run_time"] == "30s"
    open_loop = Load.model_validate(
        {"arrival": "poisson", "rate": "5/s", "max_in_flight": 7, "stages": [{"duration": "20s", "rate": "9/s"}]}
    )
    checked = checked_form(form(user_count="50", spawn_rate="1"), open_loop)
    assert (checked["user_count"], checked["spawn_rate"], checked["run_time"]) == ("7", "7", "20s")


@pytest.mark.parametrize(
    "host",
    [
        "http://10.0.0.7:8000",
        "https://api.example.invalid.evil.example",
        "https://evil.example",
        "http://0.0.0.0:8000",
        "file:///etc/passwd",
        "",
        "http://127.0.0.1@evil.example",
        "http://2130706433:8000",
        "http://127.0.0.1.nip.io",
        "http://127.0.0.1:80\r\nX: y",
        "http://127.0.0.1 .evil",
    ],
)
def test_a_host_neither_loopback_nor_given_at_start_up_is_refused(host: str) -> None:
    problem = form_problem(form(host=host), session(REAL), OFFERED, False)
    assert problem is not None and ("is not allowed" in problem or "is not an http(s) URL" in problem or "spaces or control" in problem)


def test_the_host_and_the_scenario_do_not_change_while_a_test_runs() -> None:
    running = session(None, host="http://127.0.0.1:8000")
    assert "stop the test before changing the host" in str(form_problem(form(host="http://127.0.0.1:9000"), running, OFFERED, True))
    assert "stop the test before changing the scenario" in str(form_problem(form(scenario=OFFERED[1]), running, OFFERED, True))
    assert form_problem(form(host="http://127.0.0.1:8000"), running, OFFERED, True) is None  # the edit dialog


def test_a_scenario_not_offered_is_refused_and_the_real_api_checks_run_again() -> None:
    assert "is not one of the offered files" in str(form_problem(form(scenario="/etc/passwd"), session(None), OFFERED, False))
    problem = form_problem(form(host=REAL), session(REAL, problem="needs a budget"), OFFERED, False)
    assert problem == "needs a budget"


# --- requests from other sites ----------------------------------------------------------------
def test_cross_site_requests_are_refused() -> None:
    def check(method: str, host: str = "127.0.0.1:8089", loopback_ui: bool = True, **headers: str) -> str | None:
        return cross_site_problem(method, Headers({k.replace("_", "-"): v for k, v in headers.items()}), host, loopback_ui)

    assert check("GET") is None and check("POST") is None  # curl, tests: no browser headers
    assert check("POST", Origin="http://127.0.0.1:8089", Sec_Fetch_Site="same-origin") is None
    assert "cross-site" in str(check("GET", Sec_Fetch_Site="cross-site"))
    assert "another origin" in str(check("POST", Origin="http://evil.example"))
    assert "another origin" in str(check("POST", Origin="http://127.0.0.1:3000"))  # another local site
    assert "DNS rebinding" in str(check("GET", host="evil.example:8089"))
    assert check("GET", host="loadtest.example.com", loopback_ui=False) is None  # behind a proxy, with a login
    assert check("POST", host="loadtest.example.com", loopback_ui=False, Origin="https://loadtest.example.com") is None
