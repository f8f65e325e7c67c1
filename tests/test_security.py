"""Who can reach the harness's web UI and worker port, and where its secrets go: real Locust
processes, reached from this machine's own network address (what another host would use).

- The web UI listens on loopback unless told otherwise; exposed, it demands a login; its start
  form sends the API key to no host but the one given at start-up, and sets no other option.
- The master's worker port listens on loopback unless told otherwise; a process without the
  worker secret is refused and gets no spawn message; a joined worker's spawn messages hold no
  secret; reports of a process that has not joined reach no statistics.
"""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from harness.credentials import WEB_PASSWORD_ENV, WEB_USER_ENV, WORKER_SECRET_ENV
from harness.emulator.process import EmulatorProcess
from tests.support.cluster import CEILING, Cluster
from tests.support.processes import LOCUST, ROOT, cluster_env, free_port, own_address, read_jsonl
from tests.support.webui import ARTIFACTS, LocustUI, new_page, poll

pytestmark = pytest.mark.slow

API_KEY = "sk-ant-api-key-marker-" + "k" * 24
INFLUX_TOKEN = "influx-token-marker-" + "t" * 24
USER, PASSWORD = "operator", "correct-horse-battery-staple"
LOGIN_ENV = {WEB_USER_ENV: USER, WEB_PASSWORD_ENV: PASSWORD}
WAIT_S = 60.0


class Listener(threading.Thread):
    """A server of a stranger's: counts the connections it gets and keeps what they sent.
    Answers every request with a 500 after 0.2 s (a client then fails fast, in a loop)."""

    def __init__(self, host: str) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server((host, 0))
        self.server.settimeout(0.2)
        self.url = f"http://{host}:{self.server.getsockname()[1]}"
        self.connections = 0
        self.received = bytearray()
        self.closed = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.closed.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self.answer, args=(connection,), daemon=True).start()

    def answer(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(5)
            try:
                data = connection.recv(65536)
                self.received += data[:65536]
                time.sleep(0.2)
                connection.sendall(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            except OSError:
                pass

    def close(self) -> None:
        self.closed.set()
        self.join(5)
        self.server.close()


def reachable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except ConnectionRefusedError:
        return False


def locust_exits(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A web UI start-up that must fail at once (no test is ever started)."""
    command = [LOCUST, "-f", "locustfile.py", "--web-port", str(free_port()), "--output-dir", str(tmp_path / "runs"), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, env=cluster_env(**(env or {})))


# --- the web UI --------------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_the_web_ui_listens_on_loopback_only_by_default_and_refuses_other_sites(tmp_path: Path) -> None:
    ui = LocustUI(tmp_path, "scenarios/demo.yaml", web_host=None)
    try:
        ui.wait_ready()
        assert reachable("127.0.0.1", ui.port) and not reachable(own_address(), ui.port)
        # DNS rebinding: a name of the attacker's resolving to 127.0.0.1, in a victim's browser
        rebound = requests.get(ui.url + "/claude/stats", headers={"Host": f"evil.example:{ui.port}"}, timeout=20)
        assert rebound.status_code == 403 and "DNS rebinding" in rebound.text
        # a page of another site posting the start form through the operator's browser
        forged = requests.post(
            ui.url + "/swarm", data={"user_count": 1, "spawn_rate": 1}, headers={"Origin": "http://evil.example"}, timeout=20
        )
        assert forged.status_code == 403
        reading = requests.get(ui.url + "/claude/stats", headers={"Sec-Fetch-Site": "cross-site"}, timeout=20)
        assert reading.status_code == 403
        own = requests.get(ui.url + "/claude/stats", timeout=20)
        assert own.status_code == 200 and "Access-Control-Allow-Origin" not in own.headers
        assert own.json()["run_id"] is None  # nothing was started
    finally:
        ui.stop()


@pytest.mark.timeout(180)
def test_an_exposed_web_ui_needs_a_login_with_strong_credentials_from_the_environment(tmp_path: Path) -> None:
    bare = locust_exits(tmp_path, "--web-host", "0.0.0.0")
    assert bare.returncode == 2 and "Traceback" not in bare.stderr
    assert "--web-host 0.0.0.0 makes the web UI reachable from other machines" in bare.stderr and "--web-login" in bare.stderr
    unset = locust_exits(tmp_path, "--web-host", "0.0.0.0", "--web-login", env={WEB_USER_ENV: "", WEB_PASSWORD_ENV: ""})
    assert unset.returncode == 2 and f"set {WEB_USER_ENV} and {WEB_PASSWORD_ENV}" in unset.stderr
    weak = locust_exits(tmp_path, "--web-host", own_address(), "--web-login", env={WEB_USER_ENV: USER, WEB_PASSWORD_ENV: "hunter2"})
    assert weak.returncode == 2 and "at least 12 characters" in weak.stderr


@pytest.mark.timeout(300)
def test_an_exposed_web_ui_demands_a_login_and_its_form_sends_the_key_nowhere_else(tmp_path: Path, browser: Any) -> None:
    outside = Listener(own_address())  # a server of the attacker's, on the network
    beside = Listener("127.0.0.1")  # a loopback server that is not the start-up host
    emulator = EmulatorProcess(ground_truth=tmp_path / "truth.jsonl")
    startup_host = emulator.start()
    ui = LocustUI(
        tmp_path,
        "scenarios/demo.yaml",
        "--host",
        startup_host,
        "--web-login",
        "--stop-timeout",
        "2",
        "--influx-token",
        INFLUX_TOKEN,
        web_host="0.0.0.0",
        env={**LOGIN_ENV, "ANTHROPIC_API_KEY": API_KEY},
    )
    base = f"http://{own_address()}:{ui.port}"
    try:
        ui.wait_ready()
        stranger = requests.Session()
        for path in ("/", "/claude/stats", "/claude/summary.json", "/stats/requests", "/logs"):
            answer = stranger.get(base + path, allow_redirects=False, timeout=20)
            assert answer.status_code in (302, 401) and "/login" in answer.headers.get("Location", "/login"), path
        answer = stranger.post(
            base + "/swarm", data={"user_count": 1, "spawn_rate": 1, "host": outside.url}, allow_redirects=False, timeout=20
        )
        assert answer.status_code in (302, 401)
        wrong = stranger.post(base + "/login_submit", data={"username": USER, "password": PASSWORD + "x"}, timeout=30)
        assert (
            wrong.url.startswith(base + "/login")
            and stranger.get(base + "/claude/stats", allow_redirects=False, timeout=20).status_code == 302
        )
        # guesses sent at once are answered one a second
        began = time.monotonic()
        guesses = [
            threading.Thread(
                target=requests.post,
                args=(base + "/login_submit",),
                kwargs={"data": {"username": USER, "password": f"guess{i}"}, "timeout": 60},
            )
            for i in range(4)
        ]
        for guess in guesses:
            guess.start()
        for guess in guesses:
            guess.join(90)
        assert time.monotonic() - began >= 4 * 0.95

        operator = requests.Session()
        operator.post(base + "/login_submit", data={"username": USER, "password": PASSWORD}, timeout=30).raise_for_status()
        assert operator.get(base + "/claude/stats", timeout=20).json()["run_id"] is None  # logged in; nothing started yet

        def swarm(**fields: Any) -> dict[str, Any]:
            response = operator.post(base + "/swarm", data={"user_count": 1, "spawn_rate": 1, **fields}, timeout=30)
            response.raise_for_status()
            return response.json()

        def stop() -> None:
            operator.post(base + "/stop", timeout=30).raise_for_status()
            poll(lambda: operator.get(base + "/stats/requests", timeout=20).json()["state"] == "stopped", "the test stopped")

        # the form may not point the run, the points or any file elsewhere
        answer = swarm(host=outside.url)
        assert answer["success"] is False and f"Host {outside.url} is not allowed" in answer["message"]
        evil_csv = tmp_path / "written-by-the-form"
        for field, value in [
            ("influx_url", outside.url),
            ("csv_prefix", str(evil_csv)),
            ("html_file", str(evil_csv)),
            ("stop_timeout", "0"),
        ]:
            answer = swarm(**{field: value})
            assert answer["success"] is False and f"refused: {field}" in answer["message"], answer
        assert not list(tmp_path.glob("written-by-the-form*"))

        # another loopback host may be used, with the emulator's placeholder key, never the real one
        assert swarm(host=beside.url)["success"] is True
        poll(lambda: b"x-api-key" in beside.received.lower(), "a request at the loopback server")
        stop()
        assert b"x-api-key: emulator-key" in beside.received.lower() and API_KEY.encode() not in beside.received

        # the host given at start-up gets the key
        assert swarm(host=startup_host)["success"] is True
        poll(lambda: (tmp_path / "truth.jsonl").exists() and read_jsonl(tmp_path / "truth.jsonl"), "a request at the start-up host")
        stop()
        assert outside.connections == 0

        # the real login page, in a browser on the network address
        page = new_page(browser)
        page.goto(base + "/")
        page.wait_for_url("**/login**")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "webui-login.png"))
        page.locator('input[name="username"]').fill(USER)
        page.locator('input[name="password"]').fill(PASSWORD)
        page.locator('button[type="submit"]').click()
        page.get_by_role("tab", name="Claude").wait_for(state="visible")
        page.screenshot(path=str(ARTIFACTS / "webui-after-login.png"))
        page_html = page.content()
    finally:
        ui.stop()
        emulator.stop()
        outside.close()
        beside.close()
    log = ui.log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert f"failed login from {own_address()}" in log
    for text in [log, page_html, *(p.read_text(errors="replace") for p in (tmp_path / "runs").rglob("*") if p.is_file())]:
        assert API_KEY not in text and INFLUX_TOKEN not in text


# --- the worker port ---------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_the_master_listens_for_workers_on_loopback_only_by_default(tmp_path: Path) -> None:
    port = free_port()
    command = [
        LOCUST,
        "-f",
        "locustfile.py",
        "--master",
        "--master-bind-port",
        str(port),
        "--headless",
        "--expect-workers",
        "1",
        "-u",
        "1",
        "-t",
        "60s",
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    master = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cluster_env())
    try:
        poll(lambda: master.poll() is None and reachable("127.0.0.1", port), "the worker port", 30)
        assert not reachable(own_address(), port)
    finally:
        master.kill()
        master.wait(10)
    unset = locust_exits(tmp_path, "--master", "--headless", "-t", "1s", env={WORKER_SECRET_ENV: ""})
    assert unset.returncode == 2 and f"set {WORKER_SECRET_ENV}" in unset.stderr and "Traceback" not in unset.stderr


def stranger(mode: str, port: int, out: Path, seconds: float, env: dict[str, str]) -> list[dict[str, Any]]:
    """tests/support/stranger_worker.py from this machine's network address; the messages it was sent."""
    command = [sys.executable, "-m", "tests.support.stranger_worker", mode, own_address(), str(port), str(seconds), str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_jsonl(out)


@pytest.mark.timeout(360)
def test_a_worker_without_the_secret_is_refused_and_no_spawn_message_holds_a_secret(tmp_path: Path) -> None:
    master_args = ("--master-bind-host", "0.0.0.0", "--influx-token", INFLUX_TOKEN)
    with Cluster(tmp_path, workers=1, run_time=CEILING, expect=1, master_args=master_args) as cluster:
        cluster.wait_for("request from worker-0", lambda: cluster.worker_lines("worker-0"))
        # a harness worker with another secret, over the network
        wrong = cluster.add_worker(env={WORKER_SECRET_ENV: "not-the-masters-secret"}, master_host=own_address())
        assert wrong.wait(60) == 2
        assert "did not prove the worker secret" in cluster.worker_err(wrong)
        cluster.wait_for("the refusal in the master's log", lambda: f"it has another {WORKER_SECRET_ENV}" in cluster.master_err())
        # a process that knows no secret and forges a report: it gets an acknowledgement and a challenge
        seen = stranger("stranger", cluster.port, tmp_path / "stranger.jsonl", 4, cluster_env(**{WORKER_SECRET_ENV: ""}))
        assert {message["type"] for message in seen} <= {"ack", "claude_challenge", "claude_denied"}, seen
        assert "claude_denied" in {message["type"] for message in seen}
        # what would end Locust's listener: the next worker still joins
        stranger("garbage", cluster.port, tmp_path / "garbage.jsonl", 1, cluster_env())
        # a process that proves the secret gets a spawn message: without the token
        seen = stranger("insider", cluster.port, tmp_path / "insider.jsonl", 30, cluster_env())
        spawns = [message["data"] for message in seen if message["type"] == "spawn"]
        assert spawns and spawns[0]["parsed_options"]["influx_token"] is None
        cluster.stop()
        _code, _out, err = cluster.finish()
    for path in (tmp_path / "stranger.jsonl", tmp_path / "insider.jsonl"):
        assert INFLUX_TOKEN not in path.read_text()
    assert "Traceback" not in err, err[-3000:]
    # the forged report reached no statistics: Locust's, the harness's and the log agree
    records, truth = cluster.records(), cluster.truth()
    assert len(records) == len(truth) == cluster.summary()["accounting"]["requests"] > 0
    with (tmp_path / "locust_stats.csv").open() as stats_file:
        rows = list(csv.DictReader(stats_file))
    assert not [row for row in rows if row["Name"] == "forged"]
    aggregated = next(row for row in rows if row["Name"] == "Aggregated")
    assert int(aggregated["Request Count"]) == len(records)  # TTFT rows are not requests: not in the aggregate
    assert "forged" not in json.dumps(cluster.summary())


@pytest.mark.timeout(120)
def test_a_host_declared_an_emulator_needs_no_budget_and_never_gets_the_key(tmp_path: Path) -> None:
    """docker compose's master runs against the emulator container: not loopback, no real API."""
    elsewhere = Listener(own_address())
    try:
        scenario = ROOT / "scenarios" / "demo.yaml"
        result = subprocess.run(
            [
                LOCUST,
                "-f",
                "locustfile.py",
                "--headless",
                "-u",
                "1",
                "-r",
                "1",
                "-t",
                "2s",
                "--scenario",
                str(scenario),
                "--host",
                elsewhere.url,
                "--host-is-emulator",
                "--output-dir",
                str(tmp_path / "runs"),
                "--points",
                "off",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=90,
            env=cluster_env(ANTHROPIC_API_KEY=API_KEY),
        )
    finally:
        elsewhere.close()
    assert result.returncode in (0, 1), result.stderr[-3000:]  # ran (the listener answers 500s): no budget asked
    assert elsewhere.connections > 0 and b"x-api-key: emulator-key" in elsewhere.received.lower()
    assert API_KEY.encode() not in elsewhere.received
