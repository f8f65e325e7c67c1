"""HTTP/1.1's chunked transfer coding (RFC 9112, section 7.1) undone as a stream's bytes arrive,
for the event loop's reader of a streamed response (harness/loop_reader.py).

geventhttpclient's parser (llhttp, in C) does this too, but hands each chunk's data to a
Python callback after a Python call into it: a few microseconds at every read of a stream,
where a read is most often one whole chunk (one SSE event), or a few. `ChunkedBody.feed`
takes each whole chunk in a handful of calls; anything else (a chunk split over reads, a
chunk extension, trailer fields, the last chunk) goes through the general loop. What the coding does not
allow is refused with `ChunkedError`: a size that is not hexadecimal digits, a size line or
trailer line without its end for too long, a chunk's data not followed by CRLF.
"""

from __future__ import annotations

import re

__all__ = ["ChunkedBody", "ChunkedError"]

MAX_LINE = 4096  # a size line (with its extensions) or a trailer field: longer is refused
_SIZE_DIGITS = 15  # at most 15 hex digits: below 2**60 bytes (llhttp refuses what overflows 64 bits)
_HEX = re.compile(rb"[0-9A-Fa-f]{1,%d}" % _SIZE_DIGITS)
_SIZE, _DATA_END, _TRAILER = 0, 1, 2  # expecting: a size line; the CRLF after a chunk's data; a trailer line


try:  # one error class for both readers: harness/_loopread.c decodes the same coding in C
    from harness._loopread import ChunkedError
except ImportError:  # not built

    class ChunkedError(ValueError):  # type: ignore[no-redef]
        """The body breaks the chunked coding."""


class ChunkedBody:
    """The data of a chunked body, from its bytes as they arrive; `complete` once the last chunk
    and the trailer section have come. Bytes after them are kept in `excess` (a keep-alive
    connection that carries them cannot be reused)."""

    __slots__ = ("_left", "_rest", "_state", "complete", "excess")

    def __init__(self) -> None:
        self._rest = b""  # bytes not decoded yet: a line or a CRLF cut short
        self._left = 0  # data bytes of the current chunk still to come
        self._state = _SIZE
        self.complete = False
        self.excess = b""

    def feed(self, data: bytes) -> bytes:
        """The chunks' data in `data` (the next bytes of the body)."""
        if self._state != _SIZE or self._left or self._rest:
            return self._decode(self._rest + data if self._rest else data)
        pieces: list[bytes] = []
        pos, length = 0, len(data)
        while True:  # the usual read: whole chunks (most often one), each taken in a few calls
            end = data.find(b"\r\n", pos)
            if end <= pos or not _HEX.fullmatch(data, pos, end):
                break
            size = int(data[pos:end], 16)
            stop = end + 2 + size
            if not size or data[stop : stop + 2] != b"\r\n":
                break
            if not pos and stop + 2 == length:
                return data[end + 2 : stop]
            pieces.append(data[end + 2 : stop])
            pos = stop + 2
            if pos == length:
                return b"".join(pieces)
        if pos:
            pieces.append(self._decode(data[pos:]))
            return b"".join(pieces)
        return self._decode(data)

    def _decode(self, data: bytes) -> bytes:
        self._rest = b""
        pieces: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if self.complete:
                self.excess += data[pos:]
                break
            if self._left:  # within a chunk's data
                stop = min(pos + self._left, end)
                pieces.append(data[pos:stop])
                self._left -= stop - pos
                pos = stop
                if not self._left:
                    self._state = _DATA_END
            elif self._state == _DATA_END:
                if end - pos < 2:
                    if data[pos:] != b"\r":
                        raise ChunkedError("a chunk's data is not followed by CRLF")
                    self._rest = data[pos:]
                    break
                if data[pos : pos + 2] != b"\r\n":
                    raise ChunkedError("a chunk's data is not followed by CRLF")
                pos += 2
                self._state = _SIZE
            else:
                line_end = data.find(b"\n", pos)
                if line_end < 0:
                    if end - pos > MAX_LINE:
                        raise ChunkedError(f"a chunk size or trailer line of more than {MAX_LINE} bytes")
                    self._rest = data[pos:]
                    break
                self._line(data[pos:line_end].removesuffix(b"\r"))
                pos = line_end + 1
        return b"".join(pieces)

    def _line(self, line: bytes) -> None:
        if len(line) > MAX_LINE:
            raise ChunkedError(f"a chunk size or trailer line of more than {MAX_LINE} bytes")
        if self._state == _TRAILER:
            if not line:  # the empty line that ends the trailer section (and the body)
                self.complete = True
            return  # a trailer field: not used
        size = line.split(b";", 1)[0].strip(b" \t")  # a chunk extension (and its whitespace) ignored
        if not _HEX.fullmatch(size):
            raise ChunkedError(f"a chunk size that is not 1 to {_SIZE_DIGITS} hexadecimal digits: {line[:40]!r}")
        self._left = int(size, 16)
        if not self._left:
            self._state = _TRAILER
