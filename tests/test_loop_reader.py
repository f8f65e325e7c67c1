"""The event loop's stream reader (harness/loop_reader.py) against a real server on loopback:
how its wait ends when another greenlet closes the socket, and what a stream in flight holds.
(Streams that end, break, stall or are cut off are tests/test_transport.py's scripts.)"""

from __future__ import annotations

import gc
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
