"""Reading a plain-HTTP SSE stream in the event loop's own callback (the fast transport's path).

A stream's greenlet would otherwise wake once per read: a switch to it, a read, a switch
back to the hub, for every SSE event. Here, while the stream lasts, the socket's own read
watcher calls `LoopReader._readable` when bytes are there; it reads without waiting (with the
kernel's receive stamp: harness/stamps.py), feeds geventhttpclient's parser, splits what it
decoded into lines and hands those of the read to the stream timer at once, in the loop's turn. The request's
greenlet waits once and wakes at the end of the stream, or with what broke it.

A chunked body (the Messages API's streams) is decoded here (harness/chunked.py): the
parser took the response's head alone (harness/fast_http.py's `read_head`). Any other body
goes through geventhttpclient's parser, as the head did.

Read at once, read through later. The kernel's stamp of a read is that of the segments it
took, and Linux merges a segment that arrives while earlier data waits in the socket into
that data, with the later segment's stamp: data that waits is stamped late (measured: a burst
of 500 streams whose first text came in the same millisecond, each read then decoded and
timed before the next socket's, kept the loop busy past the next token's arrival for the
last ~200 streams, whose first text took its stamp, 19.4 ms late). So the callback only
takes the bytes and their stamp; what they say is decoded and timed once every socket ready
in this turn of the loop was read (`_read_through`: at the last ready watcher of the turn,
or before the loop next polls). A loop that is late by more than a token's interval still stamps the waiting data
late: its health says so.

Objects, not closures: a stream in flight holds this one slotted object, its bound callback
and a waiter (a closure's cells would be a dozen tracked objects per stream).

In C where it was built (harness/_loopread.c, `ChunkedStream`): a chunked body's read, its
stamp, the chunks' data and the lines are taken in the callback in one call, a dozen Python
calls fewer per read; only the timing of the lines waits for the read-through. Without it (no
C compiler at install), the same in Python (`_readable`, `_decode`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
from gevent.hub import Waiter

from harness.chunked import ChunkedBody
from harness.stamps import StampedSocket

try:
    from harness._loopread import ChunkedStream
except ImportError:  # not built (no C compiler where it was installed): the Python path
    ChunkedStream = None  # type: ignore[assignment,misc]

OnLines = Callable[[int, list[bytes]], None]  # lines of a stream that one read completed, and its stamp
# how a read ended its stream: None (it goes on), True (the body's end), False (the connection
# closed before it), or the error that broke it
End = bool | BaseException | None


class LineSplitter:
    """A stream's bytes, as they arrive, into whole lines (without their \\n: SSE lines end in
    \\n alone); the start of a line whose end has not come yet is kept in `partial`. One split
    per read: a search, a copy and a shift per line (as a readline costs) would be per event."""

    __slots__ = ("partial",)

    def __init__(self) -> None:
        self.partial = b""

    def split(self, data: bytes | bytearray) -> list[bytes]:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        return lines


def closed_early() -> Exception:
    """geventhttpclient's error for a connection that closed before the response's end."""
    from geventhttpclient.response import HTTPConnectionClosed

    return HTTPConnectionClosed("connection closed.")


class ParsedBody:
    """A body that is not chunked, through the response's own parser (geventhttpclient's)."""

    __slots__ = ("_response",)

    excess = b""  # (its parser itself drops bytes after the body's end, and says so)

    def __init__(self, response: Any) -> None:
        self._response = response

    def feed(self, data: bytes) -> bytes:
        """What its parser decoded of `data` (and had decoded before: with the head)."""
        response = self._response
        if data:
            response.feed(data)
        body = bytes(response._body_buffer)
        del response._body_buffer[:]
        return body

    @property
    def complete(self) -> bool:
        return bool(self._response.message_complete)


class _TakenReads:
    """The reads the loop's callbacks took in this turn (the process's one event loop), each
    with its reader, stamp and end, read through together once the last ready watcher of the turn
    ran (libev's count of watchers still pending: most turns have one, read through at once),
    or else in a loop callback before the loop polls again."""

    __slots__ = ("_loop", "reads")

    def __init__(self) -> None:
        self._loop: Any = None
        self.reads: list[tuple[LoopReader, Any, int, End]] = []

    def add(self, reader: LoopReader, taken: Any, stamp: int, end: End) -> None:
        """`taken`: the read's bytes (the Python path), or the lines it completed (in C)."""
        loop = self._loop or self._bind()
        reads = self.reads
        reads.append((reader, taken, stamp, end))
        if not loop.pendingcnt:
            self.read_through()
        elif len(reads) == 1:
            loop.run_callback(self.read_through)

    def _bind(self) -> Any:
        self._loop = gevent.get_hub().loop
        return self._loop

    def read_through(self) -> None:
        reads, self.reads = self.reads, []
        for reader, taken, stamp, end in reads:
            reader._read_through(taken, stamp, end)


TAKEN = _TakenReads()


class LoopReader:
    """One response's stream, read by the event loop: `run(on_lines)` returns at its end."""

    __slots__ = ("_body", "_lines", "_on_lines", "_response", "_rest", "_sock", "_stamp", "_waiter", "_watcher")

    def __init__(self, response: Any, sock: StampedSocket, rest: bytes | None = None) -> None:
        """`response`: a geventhttpclient response whose head was parsed; `rest`: the body's
        bytes read with the head that its parser did not take (None: it took them all)."""
        self._response = response
        self._sock = sock
        self._on_lines: OnLines | None = None
        self._stamp = sock.clock.arrived_ns  # the stamp of the last read that brought body bytes (the partial line's)
        self._waiter: Any = None  # set while the request's greenlet waits
        self._watcher: Any = None  # the socket's own read watcher (a libev io watcher), while it waits
        chunked = rest is not None and "chunked" in (response.get("transfer-encoding") or "").lower()
        self._body: Any
        self._lines: LineSplitter | None = None  # the Python path's (C splits the lines itself)
        if chunked and ChunkedStream is not None:
            self._body = ChunkedStream(self, TAKEN.add, sock.fileno(), sock.stamp_option, response.block_size, self._stamp)
        else:
            self._body = ChunkedBody() if chunked else ParsedBody(response)
            self._lines = LineSplitter()
        self._rest = rest or b""

    def run(self, on_lines: OnLines) -> None:
        """The stream's lines (without their \\n: SSE lines end in \\n alone) to `on_lines`, those
        each read completed together, with the stamp of that read. The request's limits end the
        wait as they end a read (they are thrown into this greenlet)."""
        self._on_lines = on_lines
        body = self._body
        try:
            stamp = self._sock.clock.arrived_ns
            first = body.feed(self._rest)  # the body's bytes that came with the head (a parser's: what it decoded of them)
            self._rest = b""
            if self._lines is None:  # (C: their lines)
                self._hand_on(first, stamp)
            elif first:
                self._hand_on(self._split(first, stamp), stamp)
            if body.complete:
                self._end()
            else:
                self._wait()
            self._last_line()
        except BaseException:
            self._response.release()  # cut off: the connection is closed (its response did not end)
            raise
        finally:
            self._on_lines = None
            if self._lines is None:
                self._sock.clock.arrived_ns = body.stamp  # (C kept the connection's stamps)
                self._body = None  # (it refers to this reader)

    def _last_line(self) -> None:
        """A last line without its \\n, at the stream's end."""
        if self._lines is None:
            partial, stamp = self._body.partial, self._body.partial_stamp
        else:
            partial, stamp = self._lines.partial, self._stamp
        if partial:
            assert self._on_lines is not None
            self._on_lines(stamp, [partial])

    def _wait(self) -> None:
        waiter = self._waiter = Waiter()
        watcher = self._watcher = self._sock.read_watcher  # the socket's own: a second watcher of the fd would delay its close
        watcher.start(self._readable if self._lines is not None else self._body)
        try:
            waiter.get()
        finally:
            watcher.stop()  # before the socket's close, which a started watcher would defer
            self._waiter = self._watcher = None

    def _readable(self) -> None:
        """The loop's callback when the socket is readable (the Python path): take what is
        there, with its stamp, for `_read_through` once every ready socket was read."""
        try:
            data = self._sock.recv_ready(self._response.block_size)
        except BaseException as exc:
            TAKEN.add(self, b"", 0, exc)
            return
        if data is not None:  # (None: woken for nothing after all)
            TAKEN.add(self, data, self._sock.clock.arrived_ns, None)

    def _read_through(self, taken: Any, stamp: int, end: End) -> None:
        """A read's lines handed on with the read's stamp (the Python path decodes its bytes
        here); the greenlet woken at the end of the stream or with what broke it. Nothing when
        the wait already ended (a limit, or the socket closed by another greenlet)."""
        waiter = self._waiter
        if waiter is None:
            return
        try:
            if self._lines is not None and end is None:
                taken, end = self._decode(taken, stamp)
            if taken:
                self._hand_on(taken, stamp)
            if end is None:
                return
            if end is not True:
                raise closed_early() if end is False else end
            self._end()
        except BaseException as exc:
            self.throw(exc)
            return
        self._watcher.stop()
        waiter.switch(None)

    def _decode(self, data: bytes, stamp: int) -> tuple[list[bytes], End]:
        """The Python path: a read's bytes into the lines they complete, and how the read ended
        the stream."""
        body = self._body
        decoded = body.feed(data)
        lines = self._split(decoded, stamp) if decoded else []
        return lines, True if body.complete else None if data else False

    def _split(self, decoded: bytes, stamp: int) -> list[bytes]:
        assert self._lines is not None
        self._stamp = stamp
        return self._lines.split(decoded)

    def _end(self) -> None:
        """The body's end: a chunked one decoded here ends its response as its parser would (the
        connection back to its pool, or closed if bytes came after the end)."""
        response = self._response
        if not response.message_complete:
            response.message_complete = True
            response._trailing_data_dropped = bool(self._body.excess)
            response.release()

    def throw(self, error: BaseException) -> None:
        """End the wait with `error`: what broke the stream, or gevent's own error when another
        greenlet closes the socket (gevent's hub throws into the watcher callback's owner, the
        `__self__` of either callback)."""
        if self._waiter is not None:
            self._watcher.stop()  # (a closed watcher's stop does nothing)
            self._waiter.throw(error)

    def _hand_on(self, lines: list[bytes], stamp: int) -> None:
        if lines:
            on_lines = self._on_lines
            assert on_lines is not None
            on_lines(stamp, lines)
