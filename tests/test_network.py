"""How requests reach the target (harness/network.py): the standard proxy variables and NO_PROXY,
the same for both transports and the sizing, and one TLS trust; tested against Debian's
tinyproxy, a TLS server with a private CA, and the emulator behind it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.network import Proxy, ProxyError, proxy_for, proxy_problem, route
from harness.records import RECORDS_FILE, read_records
from tests.support.network import PROXY_PASSWORD, PROXY_USER, PrivateCA, Tinyproxy, TlsFront
from tests.support.processes import LocustResult, run_locust, write_yaml
from tests.support.runs import FAST_PROFILE, SCENARIO, start_emulator

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_proxy_variables_are_read_as_curl_reads_them(clean_env: pytest.MonkeyPatch) -> None:
    assert proxy_for("https://api.example.invalid") is None
    clean_env.setenv("HTTPS_PROXY", "http://upper:3128")
    clean_env.setenv("https_proxy", "lower.example:8080")  # lower case wins; the scheme may be left out
    proxy = proxy_for("https://api.example.invalid")
    assert proxy is not None and (proxy.host, proxy.port, proxy.variable) == ("lower.example", 8080, "HTTPS_PROXY")
    assert proxy_for("http://gateway.internal") is None  # HTTP_PROXY is the http targets'
    clean_env.setenv("ALL_PROXY", "http://all:1")
    assert proxy_for("http://gateway.internal") == Proxy("all", 1, None, None, "ALL_PROXY")


@pytest.mark.parametrize(
    ("no_proxy", "bypassed"),
    [
        ("api.example.invalid", True),
        (".example.invalid", True),
        ("example.invalid", True),
        ("*", True),
        ("api.example.invalid:443", True),
        ("api.example.invalid:8443", False),
        ("example.com,localhost", False),
    ],
)
def test_no_proxy_rules(clean_env: pytest.MonkeyPatch, no_proxy: str, bypassed: bool) -> None:
    clean_env.setenv("HTTPS_PROXY", "http://proxy:3128")
    clean_env.setenv("NO_PROXY", no_proxy)
    assert (proxy_for("https://api.example.invalid:443") is None) is bypassed


def test_the_proxys_password_is_never_shown(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTPS_PROXY", "http://me:s%40cret@proxy:3128")
    proxy = proxy_for("https://api.example.invalid")
    assert proxy is not None and proxy.password == "s@cret" and proxy.url == "http://me:s%40cret@proxy:3128"
    shown = route("https://api.example.invalid", proxy) + repr(proxy) + proxy.display
    assert "cret" not in shown and "http://me:***@proxy:3128 (HTTPS_PROXY)" in shown


@pytest.mark.parametrize(
    ("value", "says"),
    [("https://proxy:3128", "only http:// proxies"), ("http://proxy:port", "the port is not a number"), ("http://:3128", "no proxy host")],
)
def test_a_proxy_that_cannot_be_used_is_refused_at_start_up(clean_env: pytest.MonkeyPatch, value: str, says: str) -> None:
    clean_env.setenv("HTTPS_PROXY", value)
    with pytest.raises(ProxyError, match=says):
        proxy_for("https://api.example.invalid")
    assert (proxy_problem() or "").startswith("HTTPS_PROXY: ")


# --- real processes ------------------------------------------------------------------------------
TRANSPORTS = pytest.mark.parametrize("transport", ["fast", "sdk"])
NO_TRUST = {"SSL_CERT_FILE": "/nonexistent/ca.pem", "SSL_CERT_DIR": "/nonexistent"}  # no system store: only what a test gives


def run(tmp_path: Path, name: str, host: str, transport: str, env: dict[str, str]) -> tuple[LocustResult, list[dict[str, Any]], dict]:
    """A short headless run of the usual scenario against `host`, in its own folder."""
    folder = tmp_path / name
    folder.mkdir()
    summary = folder / "summary.json"
    args = (*(("--host", host) if host else ()), "--transport", transport, "--summary-json", str(summary))
    result = run_locust(folder, write_yaml(folder / "scenario.yaml", SCENARIO), *args, users=4, run_time="3s", env=clean(env))
    records = list(read_records(next(result.output_dir.rglob(RECORDS_FILE))))
    return result, records, json.loads(summary.read_text())


def port_of(url: str | None) -> int:
    return int((url or "").rsplit(":", 1)[1])


def clean(env: dict[str, str]) -> dict[str, str]:
    """The process's environment without any proxy of this machine's, plus `env` (run_locust adds os.environ)."""
    return {**dict.fromkeys(PROXY_VARIABLES, ""), "ANTHROPIC_API_KEY": "sk-ant-" + "api03-network-test-0000", **env}


@pytest.mark.slow
@TRANSPORTS
def test_every_request_goes_through_the_proxy_and_no_proxy_bypasses_it(tmp_path: Path, transport: str) -> None:
    emulator, proxy = start_emulator(tmp_path, FAST_PROFILE), Tinyproxy(tmp_path, auth=True)
    try:
        result, records, summary = run(tmp_path, "proxied", emulator.url or "", transport, {"HTTP_PROXY": proxy.url_with_credentials})
        assert result.returncode == 0, result.stderr[-3000:]
        assert proxy.requests("/v1/messages") == len(records) == summary["accounting"]["recorded"] > 0
        assert proxy.requests("/v1/messages/count_tokens") > 0  # the sizing goes the same way
        assert f"through the proxy http://{PROXY_USER}:***@127.0.0.1:{proxy.port} (HTTP_PROXY)" in result.stderr
        assert PROXY_PASSWORD not in result.stdout + result.stderr + json.dumps(summary)
        seen = proxy.text()
        result, records, _ = run(tmp_path, "bypassed", emulator.url or "", transport, {"HTTP_PROXY": proxy.url, "NO_PROXY": "127.0.0.1"})
        assert (
            result.returncode == 0 and records and proxy.text() == seen and "reach " + (emulator.url or "") + " directly" in result.stderr
        )
        result, records, _ = run(tmp_path, "built-in", "", transport, {"HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url})
        assert result.returncode == 0 and records and proxy.text() == seen and " directly" in result.stderr  # the built-in emulator
    finally:
        proxy.stop()
        emulator.stop()


@pytest.mark.slow
@TRANSPORTS
def test_a_tls_server_with_a_private_ca_through_the_proxys_tunnel_and_from_a_hashed_folder(tmp_path: Path, transport: str) -> None:
    ca = PrivateCA(tmp_path / "ca")
    emulator = start_emulator(tmp_path, FAST_PROFILE)
    front, proxy = TlsFront(port_of(emulator.url), ca), Tinyproxy(tmp_path)
    try:
        trust_file = {**NO_TRUST, "SSL_CERT_FILE": str(ca.ca_file), "HTTPS_PROXY": proxy.url}
        result, records, summary = run(tmp_path, "tunnel", front.url, transport, trust_file)
        assert result.returncode == 0, result.stderr[-3000:]
        assert records and all(r["outcome"] == "ok" for r in records) and summary["input_sizes"][0]["achieved"] is not None
        assert proxy.tunnels() > 0 and proxy.requests("/v1/messages") == 0  # CONNECT only: TLS end to end
        trust_folder = {**NO_TRUST, "SSL_CERT_DIR": str(ca.hashed_dir())}
        result, records, _ = run(tmp_path, "folder", front.url, transport, trust_folder)
        assert result.returncode == 0 and records and all(r["outcome"] == "ok" for r in records), result.stderr[-3000:]
        assert f"TLS trust: the system store (SSL_CERT_FILE=/nonexistent/ca.pem, SSL_CERT_DIR={ca.hashed_dir()})" in result.stderr
    finally:
        proxy.stop()
        front.stop()
        emulator.stop()


@pytest.mark.slow
@TRANSPORTS
def test_an_untrusted_certificate_fails_every_request_and_says_why_once(tmp_path: Path, transport: str) -> None:
    ca, other = PrivateCA(tmp_path / "ca"), PrivateCA(tmp_path / "other")
    emulator = start_emulator(tmp_path, FAST_PROFILE)
    front = TlsFront(port_of(emulator.url), ca)
    try:
        result, records, _ = run(tmp_path, "untrusted", front.url, transport, {**NO_TRUST, "SSL_CERT_FILE": str(other.ca_file)})
    finally:
        front.stop()
        emulator.stop()
    assert result.returncode == 1 and records and all(r["error_type"] == "connection_failed" for r in records)
    assert all("certificate verify failed" in r["error_message"] for r in records)
    told = [line for line in result.stderr.splitlines() if "connection to https://" in line]
    assert len(told) == 1 and "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED]" in told[0], told
