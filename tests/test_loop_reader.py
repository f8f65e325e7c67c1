"""The event loop's stream reader (harness/loop_reader.py) against a real server on loopback:
how its wait ends when another greenlet closes the socket, and what a stream in flight holds.
(Streams that end, break, stall or are cut off are tests/test_transport.py's scripts.)"""

from __future__ import annotations

import gc
import itertools
from collections import Counter
from collections.abc import Iterator

import gevent
import pytest
from gevent.server import StreamServer
from geventhttpclient import HTTPClient

from harness.loop_reader import LoopReader
from harness.stamps import ReceiveClock, StampedSocket

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
FIRST = b"data: 1\n\n"
HOLD_S = 5.0  # the server holds each stream open this long at most


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
