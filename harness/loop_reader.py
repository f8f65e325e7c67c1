"""Reading a plain-HTTP SSE stream in the event loop's own callback (the fast transport's path).

A stream's greenlet would otherwise wake once per read: a switch to it, a read, a switch
back to the hub, for every SSE event. Here, while the stream lasts, the socket's own read
watcher calls `LoopReader._readable` when bytes are there; it reads without waiting (with the
kernel's receive stamp: harness/stamps.py), feeds geventhttpclient's parser, splits what it
decoded into lines and hands those of the read to the stream timer at once, in the loop's turn. The request's
greenlet waits once and wakes at the end of the stream, or with what broke it.

Objects, not closures: a stream in flight holds this one slotted object, its bound callback
and a waiter (a closure's cells would be a dozen tracked objects per stream).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gevent.hub import Waiter

from harness.stamps import StampedSocket

OnLines = Callable[[int, list[bytes]], None]  # lines of a stream that one read completed, and its stamp


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


class LoopReader:
    """One response's stream, read by the event loop: `run(on_lines)` returns at its end."""

    __slots__ = ("_lines", "_on_lines", "_response", "_sock", "_stamp", "_waiter", "_watcher")

    def __init__(self, response: Any, sock: StampedSocket) -> None:
        self._response = response  # a geventhttpclient response whose headers were parsed
        self._sock = sock
        self._on_lines: OnLines | None = None
        self._lines = LineSplitter()
        self._stamp = 0  # the stamp of the last read that brought body bytes (the partial line's)
        self._waiter: Any = None  # set while the request's greenlet waits
        self._watcher: Any = None  # the socket's own read watcher (a libev io watcher), while it waits

    def run(self, on_lines: OnLines) -> None:
        """The stream's lines (without their \\n: SSE lines end in \\n alone) to `on_lines`, those
        each read completed together, with the stamp of that read. The request's limits end the
        wait as they end a read (they are thrown into this greenlet)."""
        self._on_lines = on_lines
        try:
            if self._response._body_buffer:  # what came with the headers
                self._split()
            if not self._response.message_complete:
                self._wait()
            if self._lines.partial:
                on_lines(self._stamp, [self._lines.partial])
        finally:
            self._on_lines = None

    def _wait(self) -> None:
        waiter = self._waiter = Waiter()
        watcher = self._watcher = self._sock.read_watcher  # the socket's own: a second watcher of the fd would delay its close
        watcher.start(self._readable)
        try:
            waiter.get()
        except BaseException:
            watcher.stop()  # before the socket's close, which a started watcher would defer
            self._response.release()  # as a read cut off in the greenlet does: the reset then closes it
            raise
        finally:
            watcher.stop()
            self._waiter = self._watcher = None

    def _readable(self) -> None:
        """The loop's callback when the socket is readable: read what is there, parse, hand on
        each whole line; wake the greenlet at the end of the stream or with what broke it."""
        response = self._response
        try:
            data = self._sock.recv_ready(response.block_size)
            if data is None:  # woken for nothing after all
                return
            response.feed(data)
            if response._body_buffer:
                self._split()
            if not data and not response.message_complete:
                raise closed_early()
        except BaseException as exc:
            self.throw(exc)
            return
        if response.message_complete:
            self._watcher.stop()
            self._waiter.switch(None)

    def throw(self, error: BaseException) -> None:
        """End the wait with `error`: what broke the stream, or gevent's own error when another
        greenlet closes the socket (gevent's hub throws into the watcher callback's owner)."""
        if self._waiter is not None:
            self._watcher.stop()  # (a closed watcher's stop does nothing)
            self._waiter.throw(error)

    def _split(self) -> None:
        body = self._response._body_buffer
        stamp = self._stamp = self._sock.clock.arrived_ns
        lines = self._lines.split(body)
        del body[:]
        if lines:
            on_lines = self._on_lines
            assert on_lines is not None
            on_lines(stamp, lines)
