"""Kernel receive stamps (harness/stamps.py): what they give and where they stop, measured on real
sockets, and the fast transport's records against the emulator's ground truth while the event loop
is held."""

from __future__ import annotations

import _socket
import inspect
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import stamps
from harness.stamps import READS, ReceiveClock, StampedSocket
from harness.transport import Target, receive_stamping
from tests.support.processes import LOCUST, ROOT, cluster_env
from tests.support.runs import messages_truth, start_emulator

pytestmark = pytest.mark.skipif(not stamps.kernel_stamps_supported(), reason="the kernel has no SO_TIMESTAMPNS")

perf_ns = time.perf_counter_ns
MAPPING_SLACK_NS = 200_000  # the realtime-to-monotonic mapping and the two clock reads around a send


class Sender:
    """A loopback peer that sends when told and notes, on the monotonic clock, when each send began
    and returned (on loopback the kernel stamps the packet inside that call)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.peer: socket.socket | None = None
        self.sends: list[tuple[int, int]] = []

    def accept(self) -> None:
        self.peer, _ = self.listener.accept()
        self.peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        assert self.peer is not None
        began = perf_ns()
        self.peer.sendall(data)
        self.sends.append((began, perf_ns()))

    def close(self) -> None:
        for sock in (self.peer, self.listener):
            if sock is not None:
                sock.close()


def connected(clock: ReceiveClock) -> tuple[Sender, StampedSocket]:
    sender = Sender()
    receiver = StampedSocket(socket.AF_INET, socket.SOCK_STREAM, 0, clock)
    accepting = threading.Thread(target=sender.accept)
    accepting.start()
    receiver.connect(("127.0.0.1", sender.port))
    accepting.join(10)
    return sender, receiver


@pytest.fixture
def pair() -> Iterator[tuple[Sender, StampedSocket, ReceiveClock]]:
    clock = ReceiveClock()
    sender, receiver = connected(clock)
    try:
        yield sender, receiver, clock
    finally:
        receiver.close()
        sender.close()


def within_send(stamp: int, send: tuple[int, int]) -> bool:
    return send[0] - MAPPING_SLACK_NS <= stamp <= send[1] + MAPPING_SLACK_NS


def test_a_late_read_is_stamped_when_the_bytes_arrived_not_when_it_was_read(pair: tuple[Sender, StampedSocket, ReceiveClock]) -> None:
    sender, receiver, clock = pair
    sender.send(b"data: first\n\n")
    time.sleep(0.05)  # the reader is busy elsewhere for 50 ms
    read_at, start = perf_ns(), READS.counts()
    assert receiver.recv(4096) == b"data: first\n\n"
    assert within_send(clock.arrived_ns, sender.sends[0]), (clock.arrived_ns - sender.sends[0][0]) / 1e6
    assert read_at - clock.arrived_ns > 40_000_000  # a user-space stamp would have been this late
    assert READS.since(start)["kernel"] >= 1  # the process's counts (the run's figures; other tests' sockets may read too)


def test_connections_opened_one_after_another_are_stamped_from_their_first_packet() -> None:
    """Linux stamps packets only while a socket asks for it, and turns stamping back on some
    time after one asks again: the process keeps its probe socket open so that a connection
    opened after the last one closed (a new connection per request through a proxy, the first
    of a run) is not read unstamped. Without it 29 of 30 such first reads came unstamped."""
    for _ in range(10):
        clock = ReceiveClock()
        sender, receiver = connected(clock)
        try:
            sender.send(b"data: first\n\n")
            time.sleep(0.01)
            assert receiver.recv(4096) == b"data: first\n\n"
            assert within_send(clock.arrived_ns, sender.sends[0]), (clock.arrived_ns - sender.sends[0][0]) / 1e6
        finally:
            receiver.close()
            sender.close()
        time.sleep(0.02)  # every stamped connection of this test is closed meanwhile


def test_segments_that_wait_unread_are_merged_under_the_stamp_of_the_last(pair: tuple[Sender, StampedSocket, ReceiveClock]) -> None:
    """The limit: TCP merges queued segments, so a read that finds several events waiting stamps
    them all when the last one came (still earlier than the read)."""
    sender, receiver, clock = pair
    for n in range(3):
        sender.send(b"data: %d\n\n" % n)
        time.sleep(0.02)
    read_at, start = perf_ns(), READS.counts()
    data = b""
    while len(data) < 3 * len(b"data: 0\n\n"):
        data += receiver.recv(9)  # a read of one event's size: still the merged segment's stamp
        assert within_send(clock.arrived_ns, sender.sends[-1]) and clock.arrived_ns < read_at
    assert READS.since(start)["kernel"] >= 3


def test_a_step_of_the_wall_clock_is_clamped_and_counted(
    pair: tuple[Sender, StampedSocket, ReceiveClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, receiver, clock = pair
    sender.send(b"data: before\n\n")
    receiver.recv(4096)
    before, start = clock.arrived_ns, READS.counts()
    monkeypatch.setattr(stamps, "wall_ns", lambda: time.time_ns() + 3600 * 10**9)  # the wall clock jumps an hour ahead
    time.sleep(2 * stamps.OFFSET_REUSE_NS / 1e9)  # (seen at the next sample of the clocks' offset)
    sender.send(b"data: after\n\n")
    receiver.recv(4096)
    assert READS.since(start)["clamped"] >= 1 and clock.arrived_ns == before  # not an hour in the past
    monkeypatch.setattr(stamps, "wall_ns", lambda: time.time_ns() - 3600 * 10**9)  # ... and an hour back
    time.sleep(2 * stamps.OFFSET_REUSE_NS / 1e9)
    sender.send(b"data: again\n\n")
    receiver.recv(4096)
    returned = perf_ns()
    assert READS.since(start)["clamped"] >= 2 and clock.arrived_ns <= returned  # not an hour in the future


def test_a_stamp_is_mapped_with_an_offset_of_the_clocks_at_most_a_millisecond_old(pair: tuple[Sender, StampedSocket, ReceiveClock]) -> None:
    sender, receiver, _ = pair
    stamps.CLOCKS.sampled_ns = -(10**18)  # sampled long ago
    before = perf_ns()
    sender.send(b"data: one\n\n")
    receiver.recv(4096)
    sampled = stamps.CLOCKS.sampled_ns
    assert sampled >= before  # sampled again at this read
    assert abs(stamps.CLOCKS.offset_ns - (perf_ns() - time.time_ns())) < 1_000_000
    for _ in range(5):
        sender.send(b"data: more\n\n")
        receiver.recv(4096)
        now = stamps.CLOCKS.sampled_ns
        assert now == sampled or now - sampled > stamps.OFFSET_REUSE_NS  # kept, unless it had grown old
        sampled = now


def test_without_kernel_stamps_a_read_is_stamped_when_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stamps, "enable_stamps", lambda sock: None)
    clock = ReceiveClock()
    sender, receiver = connected(clock)
    try:
        sender.send(b"data: x\n\n")
        time.sleep(0.03)
        read_at, start = perf_ns(), READS.counts()
        receiver.recv(4096)
        assert clock.arrived_ns >= read_at and READS.since(start)["user"] >= 1
    finally:
        receiver.close()
        sender.close()


def test_the_run_says_which_stamping_it_uses() -> None:
    def target(url: str) -> Target:
        return Target(url, api_key="k", headers={})

    assert receive_stamping(target("http://127.0.0.1:8080"), "fast") == stamps.KERNEL
    assert receive_stamping(target("https://api.example.invalid"), "fast") == stamps.USER  # the ssl module reads TLS itself
    assert receive_stamping(target("http://127.0.0.1:8080"), "sdk") == stamps.USER


def test_the_geventhttpclient_internals_the_transport_relies_on() -> None:
    """The fast transport makes its plain-HTTP connections of StampedSocket through the connection
    pool's socket factory: it must still exist, be called for each connection, take these arguments."""
    from geventhttpclient import HTTPClient

    client = HTTPClient("127.0.0.1", port=9)
    factory = client._connection_pool._create_tcp_socket
    assert list(inspect.signature(factory).parameters) == ["family", "socktype", "protocol"]
    assert "self._create_tcp_socket(" in inspect.getsource(type(client._connection_pool)._create_socket)
    client.close()
    # gevent's socket: the plain socket it wraps (read without waiting from the loop's callback)
    # and its own read watcher (which the transport starts with that callback)
    sock = StampedSocket(socket.AF_INET, socket.SOCK_STREAM, 0, ReceiveClock())
    assert isinstance(sock._sock, _socket.socket) and sock._sock.gettimeout() == 0.0
    assert sock.read_watcher.fd == sock.fileno() and sock.read_watcher.events & 1  # READ
    sock.close()


# ------------------------------------------------------------------ the transport, with a held loop

BURST_PROFILE = {
    "seed": 5,
    "models": {
        "default": {
            "ttft_ms": 200,  # tests/support/busy_loop_child.py's TTFT_MS
            "ttft_ms_per_1k_input": 0,
            "output_tps": 10,  # the next delta 100 ms after the first text: past the held loop
            "jitter": 0.0,
            "output_tokens": {"mean": 3, "sd": 0, "min": 3, "max": 3},
            "first_output_grid_ms": 500,
        }
    },
}
STREAMS = 50


def held_loop_errors(tmp_path: Path, stamping: str, before_ms: float, after_ms: float) -> tuple[list[float], dict[str, Any]]:
    """Each stream's TTFT error (ms) against the emulator's first-text write, read by a loop held
    from before_ms before the first texts to after_ms after them; and the child's report."""
    tmp_path.mkdir()
    emulator = start_emulator(tmp_path, BURST_PROFILE)
    try:
        url = emulator.url or ""
        args = [url, str(STREAMS), "500", str(before_ms), str(after_ms), stamping]
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.busy_loop_child", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        emulator.stop()
    report = json.loads(done.stdout)
    truth = {row["request_id"]: row for row in messages_truth(tmp_path / "truth.jsonl")}
    errors = []
    for record in report["records"]:
        assert record["outcome"] == "ok", record
        written = truth[record["request_id"]]["t_first_text_ns"]
        errors.append((record["start_ns"] + record["ttft_ms"] * 1e6 - written) / 1e6)
    return sorted(errors), report


@pytest.mark.slow
def test_first_texts_that_arrive_while_the_loop_is_held_keep_their_arrival_time(tmp_path: Path) -> None:
    """50 streams whose first text comes while the loop is held (20 ms before to 60 ms after):
    with kernel stamps each TTFT is within a millisecond of the emulator's write; the control,
    stamped when read, is late by the rest of the hold on every stream."""
    errors, report = held_loop_errors(tmp_path / "kernel", stamps.KERNEL, 20, 60)
    assert report["reads"]["kernel"] > 0 and report["reads"]["clamped"] == 0
    assert errors[0] >= -MAPPING_SLACK_NS / 1e6 and errors[-1] < 1.0, errors
    control, report = held_loop_errors(tmp_path / "user", stamps.USER, 20, 60)
    assert report["reads"]["kernel"] == 0 and report["reads"]["user"] > 0
    assert control[0] > 40, control  # read after the hold: 60 ms after the writes, less their spread


def test_a_bad_stamping_variable_is_refused_at_start_up(tmp_path: Path) -> None:
    env = cluster_env(**{stamps.STAMPS_VARIABLE: "bogus"})
    command = [LOCUST, "-f", "locustfile.py", "--headless", "-t", "2s", "-u", "1", "--output-dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "HARNESS_RECEIVE_STAMPS='bogus': use kernel (the default) or user" in done.stderr
