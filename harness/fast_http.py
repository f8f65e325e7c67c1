"""What the fast transport does with HTTP/1.1 itself rather than through geventhttpclient's
general code, which costs microseconds per request at every send:

- `RequestHead`: the head of its one kind of request, a POST of JSON to the Messages API,
  built and checked once per target. geventhttpclient builds each head anew (a case-insensitive
  merge of the headers, a pattern match of every name and value, some 10 us). The head here says
  the same (its default User-Agent, Host, the target's headers, Content-Length) and is checked
  the same way (harness/credentials.py): a header that could split the request (a line break in
  a value) is refused. A variant's own headers make a head of their own.
- `Fields`: a response's header fields in a plain dict by lowercase name, for geventhttpclient's
  parser (its `headers_type`): its own case-insensitive multi-dict takes several calls per field
  and raises and catches a KeyError for each field looked up and not there (most rate-limit
  fields, content-encoding).
- `read_head`: a response's head read from the socket, apart from the body bytes that came with
  it, so that geventhttpclient's parser takes the head alone and a chunked stream's body can be
  decoded without it (harness/chunked.py).
- `EventStreamResponse`: the response of a stream that went well, its head parsed here.
  llhttp calls back into Python for every name and value of the head (the Messages API sends a
  dozen fields, rate limits among them): about a tenth of the fast transport's CPU per
  request. A head of the one shape such a response has (`HTTP/1.1 200`, plain fields in
  ASCII, an event stream sent chunked, kept alive, no content coding) is checked whole by one
  pattern and split here; any other head, and every other response, goes to geventhttpclient's
  parser as before.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from typing import Any

from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketPoolResponse

from harness.credentials import header_name_ok, header_value_ok

MAX_HEAD = 64 * 1024  # a head not ended within this is left to geventhttpclient's parser whole
_INTERIM = (b"HTTP/1.1 1", b"HTTP/1.0 1")  # a 1xx response: another head follows
EVENT_STREAM = "text/event-stream"
# a head of `HTTP/1.1 200`, each field `token: value` in visible ASCII (or tabs), CRLF only
_FIELD = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n"
_NAME_VALUE = re.compile(r"([^:]+):[ \t]*([^\r]*)\r\n")  # a field of such a head, split
_OK_HEAD = re.compile(rb"HTTP/1\.1 200(?: [\t\x20-\x7e]*)?\r\n((?:" + _FIELD + rb")*)\r\n")


class RequestHead:
    """`POST <path> HTTP/1.1` with the headers every request of a target carries."""

    def __init__(self, host: str, port: int, path: str, headers: Mapping[str, str]) -> None:
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        self._host = host if port in (80, 443) else f"{host}:{port}"
        self._path = path
        self._headers = _merged(headers)
        self._prefix = self._build(self._headers)

    def of(self, body: bytes, extra: Mapping[str, str] | None = None) -> bytes:
        """The request's bytes: head and body, for one send (`extra`: a variant's headers, which
        replace the target's of the same name)."""
        prefix = self._prefix if not extra else self._build({**self._headers, **_merged(extra)})
        return b"%s%d\r\n\r\n%s" % (prefix, len(body), body)

    def _build(self, headers: Mapping[str, tuple[str, str]]) -> bytes:
        lines = [f"POST {self._path} HTTP/1.1", f"Host: {self._host}"]
        for name, value in headers.values():
            if not header_name_ok(name):
                raise ValueError(f"invalid header field name {name!r}")
            if not header_value_ok(value):
                raise ValueError(f"invalid value for header field {name!r}")  # (the value may be a secret: not shown)
            lines.append(f"{name}: {value}")
        lines.append("Content-Length: ")
        return "\r\n".join(lines).encode("latin-1")


def _merged(headers: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Headers by their lowercase name (names are case-insensitive: the last given wins)."""
    return {name.lower(): (name, str(value)) for name, value in headers.items()}


class Fields(dict[str, str]):
    """Header fields by lowercase name; a field given twice keeps both values, joined by ", "
    (as RFC 9110 allows for a list-valued field)."""

    __slots__ = ()

    def add(self, field: str, value: str) -> None:
        name = field.lower()
        old = dict.get(self, name)
        self[name] = value if old is None else f"{old}, {value}"

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


def read_head(sock: Any, block_size: int) -> tuple[bytes, bytes | None]:
    """The response's head (up to its empty line) and the body's bytes read with it; `None` for
    the latter where the head is left whole to geventhttpclient's parser, which then reads on
    from the socket itself: after an interim 1xx response, a head that does not end within
    MAX_HEAD, or bytes that are not an HTTP response. A connection closed (or reset) before any byte, or before the head's end, raises
    geventhttpclient's own errors."""
    data = b""
    while True:
        try:
            more = sock.recv(block_size)
        except OSError as exc:
            if exc.errno == errno.ECONNRESET and not data:
                raise HTTPConnectionClosed("connection closed.") from exc
            raise
        if not more:
            if not data:
                raise HTTPConnectionClosed("connection closed.")
            raise HTTPParseError("connection closed before end of the headers")
        data += more
        if not data.startswith(b"HTTP/"[: len(data)]) or data.startswith(_INTERIM) or len(data) > MAX_HEAD:
            return data, None  # (not HTTP at all: the parser says so at once)
        end = _head_end(data)
        if end is not None:
            return data[:end], data[end:]


def _head_end(data: bytes) -> int | None:
    """Where the body starts: after the head's empty line (CRLF, or a bare LF as parsers allow)."""
    ends = [at + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (at := data.find(mark)) >= 0]
    return min(ends) if ends else None


def content_kind(content_type: str | None) -> str:
    """A Content-Type's media type, lowercase, without its parameters."""
    return (content_type or "").split(";")[0].strip().lower()


def response_of(sock: Any, pool: Any, head: bytes, block_size: int, stream: bool) -> Any:
    """The response whose head `read_head` read apart: an EventStreamResponse for a stream's head
    of the usual shape (`stream`: the request asked for one), else geventhttpclient's own."""
    fields = _event_stream_fields(head) if stream else None
    if fields is not None:
        return EventStreamResponse(sock, pool, fields, block_size)
    return HTTPSocketPoolResponse(sock, pool, block_size=block_size, method="POST", headers_type=Fields, pre_buffered=head)


def _event_stream_fields(head: bytes) -> Fields | None:
    """The fields of a `200` event stream's head, sent chunked, kept alive and not encoded, in
    plain HTTP/1.1 syntax; None for any other head."""
    match = _OK_HEAD.fullmatch(head)
    if match is None:
        return None
    fields = Fields()
    for name, value in _NAME_VALUE.findall(match.group(1).decode("ascii")):  # (the value's trailing space kept, as llhttp keeps it)
        fields.add(name, value)
    ok = (
        (fields.get("transfer-encoding") or "").lower() == "chunked"
        and "content-length" not in fields
        and "content-encoding" not in fields
        and (fields.get("connection") or "keep-alive").lower() == "keep-alive"
        and content_kind(fields.get("content-type")) == EVENT_STREAM
    )
    return fields if ok else None


class EventStreamResponse:
    """A 200 event stream over a pooled connection, for harness/loop_reader.py: what it and the
    transport read of geventhttpclient's response (status, fields, the socket, the end of the
    message), without its parser. The connection goes back to its pool at the stream's end
    (`release` once `message_complete`), or is closed if the stream did not end cleanly."""

    __slots__ = ("_pool", "_sock", "_trailing_data_dropped", "block_size", "fields", "message_complete")

    status_code = 200

    def __init__(self, sock: Any, pool: Any, fields: Fields, block_size: int) -> None:
        self._sock = sock
        self._pool = pool
        self.fields = fields
        self.block_size = block_size
        self.message_complete = False
        self._trailing_data_dropped = False

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key, default)

    def release(self) -> None:
        pool, sock = self._pool, self._sock
        self._pool = self._sock = None
        if sock is not None and pool is not None:
            if self.message_complete and not self._trailing_data_dropped:
                pool.return_socket(sock)
            else:
                pool.release_socket(sock)

    def __del__(self) -> None:
        if self._sock is not None and self._pool is not None:
            self._pool.release_socket(self._sock)
