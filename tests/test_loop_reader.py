"""The event loop's stream reader (harness/loop_reader.py) against a real server on loopback:
how its wait ends when another greenlet closes the socket, and what a stream in flight holds.
(Streams that end, break, stall or are cut off are tests/test_transport.py's scripts.)

Every test runs twice: with a chunked body read in C (harness/_loopread.c, built by the
install) and in Python (the path without it)."""

from __future__ import annotations

import gc
import itertools
import time
from collections import Counter
from collections.abc import Iterator

import gevent
import pytest
from gevent.server import StreamServer
from geventhttpclient import HTTPClient

from harness import loop_reader
from harness.loop_reader import LoopReader
from harness.stamps import ReceiveClock, StampedSocket

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
FIRST = b"data: 1\n\n"
HOLD_S = 5.0  # the server holds each stream open this long at most


@pytest.fixture(autouse=True, params=["C", "python"])
def reads_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where a chunked body is read: in C (which the install built: it is missing if this
    fails) or on the Python path."""
    if request.param == "C":
        assert loop_reader.ChunkedStream is not None, "harness._loopread was not built: pip install -e . needs a C compiler"
    else:
        monkeypatch.setattr(loop_reader, "ChunkedStream", None)
    return str(request.param)


def _stalling(sock: object, _address: object) -> None:
    """Answers a request with the headers and one event, then sends nothing more."""
    sock.recv(65536)  # type: ignore[attr-defined]
    sock.sendall(HEAD + b"%x\r\n%s\r\n" % (len(FIRST), FIRST))  # type: ignore[attr-defined]
    gevent.sleep(HOLD_S)


@pytest.fixture
def server() -> Iterator[StreamServer]:
    srv = StreamServer(("127.0.0.1", 0), _stalling)
    srv.start()
    yield srv
    srv.stop(timeout=0)


def _ignore_lines(_t_ns: int, _lines: list[bytes]) -> None:
    pass


def _open_stream(port: int) -> tuple[HTTPClient, LoopReader]:
    clock = ReceiveClock()
    client = HTTPClient("127.0.0.1", port, concurrency=1, network_timeout=None)  # type: ignore[arg-type]
    client._connection_pool._create_tcp_socket = lambda family, kind, proto: StampedSocket(family, kind, proto, clock)  # type: ignore[method-assign,assignment]
    response = client.request("POST", "/v1/messages", body=b"{}")
    return client, LoopReader(response, response._sock)


def test_a_socket_closed_by_another_greenlet_ends_the_wait_with_gevents_error(server: StreamServer) -> None:
    client, reader = _open_stream(server.server_port)
    sock = reader._sock
    lines: list[bytes] = []
    waiting = gevent.spawn(reader.run, lambda _t, read: lines.extend(read))
    gevent.sleep(0.1)
    assert not waiting.dead and lines == [b"data: 1", b""]  # the first event came; the stream waits
    sock.close()  # gevent throws its error into the owner of the watcher's callback: the reader
    waiting.join(timeout=2)
    assert waiting.dead and isinstance(waiting.exception, OSError), waiting.exception
    assert "closed in another greenlet" in str(waiting.exception)
    client.close()


def test_a_stream_in_flight_holds_no_closures(server: StreamServer) -> None:
    """What a stream in flight holds is counted by tests/test_memory.py's growth check: one
    slotted reader and a waiter, no cells or functions (a closure's would be a dozen)."""
    streams = [_open_stream(server.server_port) for _ in range(40)]
    ignore = _ignore_lines  # one function for all (a lambda each would be counted)
    gc.collect()
    before = Counter(type(o).__name__ for o in gc.get_objects())
    waiting = [gevent.spawn(reader.run, ignore) for _, reader in streams]
    gevent.sleep(0.1)
    assert not any(g.dead for g in waiting)
    gc.collect()
    grown = Counter(type(o).__name__ for o in gc.get_objects()) - before
    assert grown["cell"] == 0 and grown["function"] == 0, grown.most_common(8)
    gevent.killall(waiting, timeout=2)
    for client, _ in streams:
        client.close()


# --- a chunked body decoded by the reader (the head parsed alone: harness/fast_http.py) --------
EVENTS = [b"event: ping\ndata: 1\n\n", b"data: " + b"y" * 200 + b"\n\n"]
CHUNKED = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in EVENTS) + b"0\r\n\r\n"


def _serving(body_writes: list[bytes]) -> StreamServer:
    """Answers each request with the head and then `body_writes`, one write each, 20 ms apart;
    an empty write closes the connection."""

    def handle(sock: object, _address: object) -> None:
        while sock.recv(65536):  # type: ignore[attr-defined]
            sock.sendall(HEAD + body_writes[0])  # type: ignore[attr-defined]
            for write in body_writes[1:]:
                gevent.sleep(0.02)
                if not write:
                    return
                sock.sendall(write)  # type: ignore[attr-defined]

    srv = StreamServer(("127.0.0.1", 0), handle)
    srv.start()
    return srv


def _chunked_stream(client: HTTPClient, parsed_by: str) -> tuple[list[bytes], BaseException | None]:
    """One request read as the fast transport reads it: its lines, or what broke the stream.
    `parsed_by`: the head's parser, harness/fast_http.py's own (as a stream's usual head is) or
    geventhttpclient's (as any other head is)."""
    from geventhttpclient.response import HTTPSocketPoolResponse

    from harness.fast_http import EventStreamResponse, read_head, response_of

    pool = client._connection_pool
    sock = pool.get_socket()
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    head, rest = read_head(sock, 65536)
    if parsed_by == "harness":
        response = response_of(sock, pool, head, 65536, stream=True)
        assert isinstance(response, EventStreamResponse)
    else:
        response = HTTPSocketPoolResponse(sock, pool, method="POST", pre_buffered=head)
    lines: list[bytes] = []
    try:
        LoopReader(response, sock, rest).run(lambda _t, read: lines.extend(read))
    except Exception as exc:
        return lines, exc
    return lines, None


def _client(port: int) -> HTTPClient:
    clock = ReceiveClock()
    client = HTTPClient("127.0.0.1", port, concurrency=1, network_timeout=None)  # type: ignore[arg-type]
    client._connection_pool._create_tcp_socket = lambda family, kind, proto: StampedSocket(family, kind, proto, clock)  # type: ignore[method-assign,assignment]
    return client


def _lines_of(events: list[bytes]) -> list[bytes]:
    return b"".join(events).split(b"\n")[:-1]


@pytest.mark.parametrize("cuts", [[len(CHUNKED)], [3, 30, 31, 60, len(CHUNKED) - 2, len(CHUNKED)]])
@pytest.mark.parametrize("parsed_by", ["harness", "geventhttpclient"])
def test_a_chunked_stream_cut_anywhere_gives_its_lines_and_keeps_its_connection(cuts: list[int], parsed_by: str) -> None:
    edges = [0, *cuts]
    srv = _serving([CHUNKED[a:b] for a, b in itertools.pairwise(edges)])
    client = _client(srv.server_port)
    try:
        for _ in range(2):  # the second request on the same connection
            lines, error = _chunked_stream(client, parsed_by)
            assert error is None and lines == _lines_of(EVENTS)
            assert client._connection_pool._socket_queue.qsize() == 1  # back in the pool
    finally:
        client.close()
        srv.stop(timeout=0)


@pytest.mark.parametrize("parsed_by", ["harness", "geventhttpclient"])
def test_bytes_after_a_chunked_streams_end_close_its_connection(parsed_by: str) -> None:
    srv = _serving([CHUNKED[:10], CHUNKED[10:] + b"HTTP/1.1 200 OK\r\n"])
    client = _client(srv.server_port)
    try:
        lines, error = _chunked_stream(client, parsed_by)
        assert error is None and lines == _lines_of(EVENTS)
        assert client._connection_pool._socket_queue.qsize() == 0  # closed, not reused
    finally:
        client.close()
        srv.stop(timeout=0)


@pytest.mark.parametrize("parsed_by", ["harness", "geventhttpclient"])
def test_a_broken_chunk_size_ends_the_stream_with_an_error_and_closes_the_connection(parsed_by: str) -> None:
    from harness.chunked import ChunkedError

    first = b"%x\r\n%s\r\n" % (len(EVENTS[0]), EVENTS[0])
    srv = _serving([first, b"zz\r\n"])
    client = _client(srv.server_port)
    try:
        lines, error = _chunked_stream(client, parsed_by)
        assert isinstance(error, ChunkedError) and lines == _lines_of(EVENTS[:1])
        assert client._connection_pool._socket_queue.qsize() == 0
    finally:
        client.close()
        srv.stop(timeout=0)


@pytest.mark.parametrize("parsed_by", ["harness", "geventhttpclient"])
def test_a_connection_closed_mid_chunk_ends_the_stream_as_closed_early(parsed_by: str) -> None:
    srv = _serving([CHUNKED[:40], b""])
    client = _client(srv.server_port)
    try:
        _lines, error = _chunked_stream(client, parsed_by)
        assert error is not None and "connection closed" in str(error)
    finally:
        client.close()
        srv.stop(timeout=0)


# --- a burst: every ready socket read before any read is decoded and timed -------------------
BURST_SERVER = """
import json, socket, sys, time
streams = int(sys.argv[2])
listener = socket.create_server(("127.0.0.1", 0), backlog=streams)
print(listener.getsockname()[1], flush=True)
conns = []
for _ in range(streams):
    conn, peer = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.recv(65536)
    conn.sendall(sys.argv[1].encode("latin-1"))  # the head and an event without text
    conns.append((conn, peer[1]))
time.sleep(0.2)
written = {}
for text, pause in ((b"a", 0.1), (b"b", 0.01), (None, 0)):  # the first text, the next token 100 ms later, the end
    for conn, port in conns:
        if text is None:
            conn.sendall(b"0\\r\\n\\r\\n")
            continue
        event = b'data: {"text": "%s"}\\n\\n' % text
        written.setdefault(text.decode(), {})[port] = time.perf_counter_ns()
        conn.sendall(b"%x\\r\\n%s\\r\\n" % (len(event), event))
    time.sleep(pause)
print(json.dumps(written), flush=True)
for conn, _ in conns:
    conn.recv(1)  # until the client leaves
"""
BURST_STREAMS = 60
SLOW_S = 0.0025  # what timing each first text costs here (the loop blocked): 150 ms for all, past the next token
# the client's loop is held (blocked) from 0.1 to 0.25 s after the last opening came: the burst
# (sent 0.2 s after the server's last opening)
# arrives while it is held, so its next poll finds every first text there at once (on a loaded
# machine the server's sends could otherwise straddle a poll)
HOLD_FROM_S, LOOP_HOLD_S = 0.1, 0.15


def test_a_burst_of_first_texts_is_stamped_as_it_came_however_long_timing_them_takes() -> None:
    """Each stream's first text and next token 100 ms apart; timing the first texts takes 150 ms.
    Were each read timed before the next socket's read, the later streams' first text would
    wait in the kernel, merged into the next token's segment with its stamp (100 ms late)."""
    import json
    import subprocess
    import sys

    from gevent import monkey

    from harness.fast_http import read_head, response_of

    blocking_sleep = monkey.get_original("time", "sleep")
    opening = HEAD + b"%x\r\n%s\r\n" % (len(FIRST), FIRST)
    server = subprocess.Popen(
        [sys.executable, "-c", BURST_SERVER, opening.decode("latin-1"), str(BURST_STREAMS)], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    port = int(server.stdout.readline())
    stamps: dict[int, int] = {}  # local port -> the first text's stamp
    timed_at: list[int] = []
    opened: list[int] = []

    def stream() -> None:
        client = _client(port)
        try:
            pool = client._connection_pool
            sock = pool.get_socket()
            local = sock.getsockname()[1]
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            head, rest = read_head(sock, 65536)

            def on_lines(stamp: int, lines: list[bytes]) -> None:
                if b"data: 1" in lines:  # the opening event
                    opened.append(local)
                    if len(opened) == BURST_STREAMS:
                        gevent.spawn_later(HOLD_FROM_S, blocking_sleep, LOOP_HOLD_S)
                if any(b'"a"' in line for line in lines):
                    stamps[local] = stamp
                    timed_at.append(time.perf_counter_ns())
                    blocking_sleep(SLOW_S)

            LoopReader(response_of(sock, pool, head, 65536, stream=True), sock, rest).run(on_lines)
        finally:
            client.close()

    try:
        greenlets = [gevent.spawn(stream) for _ in range(BURST_STREAMS)]
        gevent.joinall(greenlets, timeout=10)
        assert all(g.successful() for g in greenlets), [g.exception for g in greenlets if g.exception]
        written = json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait(5)
    assert max(timed_at) - min(timed_at) > 100_000_000  # the loop was busy past the next token's arrival
    late_ms = sorted((stamps[int(local)] - at) / 1e6 for local, at in written["a"].items())
    assert len(late_ms) == BURST_STREAMS and late_ms[-1] < 5.0, late_ms  # each its own segment's stamp
