"""The per-read path in C (harness/_loopread.c) against its Python reference: the same lines,
ends and errors for any body cut any way (harness/chunked.py and loop_reader.LineSplitter), and
its reads of a real loopback TCP connection: the kernel's stamp mapped and clamped as
harness/stamps.py maps it, counted in the process's reads, and what it tells its sink."""

from __future__ import annotations

import errno
import itertools
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import _loopread as loopread  # built by the install (a collection error where it was not)
from harness import stamps
from harness.chunked import MAX_LINE, ChunkedBody, ChunkedError
from harness.loop_reader import LineSplitter

ChunkedStream = loopread.ChunkedStream
perf_ns = time.perf_counter_ns
HOUR_NS = 3600 * 10**9


def _python_reads(reads: list[bytes]) -> tuple[list[Any], ChunkedBody, LineSplitter]:
    """Each read's lines (or the error's text, and nothing after it), by the Python path."""
    body, splitter, out = ChunkedBody(), LineSplitter(), []
    for read in reads:
        try:
            out.append(splitter.split(body.feed(read)))
        except ChunkedError as exc:
            out.append(str(exc))
            break
    return out, body, splitter


def _c_reads(reads: list[bytes]) -> tuple[list[Any], Any]:
    stream, out = ChunkedStream(None, print, -1, None, 65536, 0), []
    for read in reads:
        try:
            out.append(stream.feed(read))
        except ChunkedError as exc:
            out.append(str(exc))
            break
    return out, stream


def _chunked(data: bytes, sizes: list[int], ext: bool, upper: bool, bare_lf: bool, trailer: bool) -> bytes:
    """`data` in chunks of `sizes` (cycled), in the coding's optional spellings."""
    out, pos, eol = [], 0, b"\n" if bare_lf else b"\r\n"
    for size in itertools.cycle(sizes):
        piece = data[pos : pos + size]
        if not piece:
            break
        number = b"%X" % len(piece) if upper else b"%x" % len(piece)
        out.append(number + (b" ;x=1" if ext else b"") + eol + piece + b"\r\n")
        pos += size
    out.append(b"0" + eol + (b"x-t: 1\r\n" if trailer else b"") + b"\r\n")
    return b"".join(out)


@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=300).map(lambda b: b.replace(b"\x00", b"\n")),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    spelling=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    excess=st.sampled_from([b"", b"HTTP/1.1 200 OK\r\n"]),
    corrupt=st.one_of(st.none(), st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=1))),
    cuts=st.lists(st.integers(0, 10**6), max_size=10),
)
def test_c_and_python_give_the_same_lines_ends_and_errors(
    data: bytes, sizes: list[int], spelling: tuple[bool, bool, bool, bool], excess: bytes, corrupt: Any, cuts: list[int]
) -> None:
    raw = _chunked(data, sizes, *spelling) + excess
    if corrupt is not None:  # one byte replaced anywhere: a size, a CRLF or the data
        at = corrupt[0] % len(raw)
        raw = raw[:at] + corrupt[1] + raw[at + 1 :]
    edges = [0, *sorted({c % (len(raw) + 1) for c in cuts}), len(raw)]
    reads = [raw[a:b] for a, b in itertools.pairwise(edges)]
    python, body, splitter = _python_reads(reads)
    c, stream = _c_reads(reads)
    assert c == python
    assert (stream.complete, stream.excess) == (body.complete, body.excess)
    if not (c and isinstance(c[-1], str)):  # (after an error the stream is over: its partial line is not used)
        assert stream.partial == splitter.partial


@pytest.mark.parametrize(
    ("reads", "error"),
    [
        ([b"1" + b" " * (MAX_LINE - 1), b"  "], "more than 4096 bytes"),  # a size line without its end, too long
        ([b"1" * 16 + b"\r\n"], "not 1 to 15 hexadecimal digits: b'1111111111111111'"),
        ([b"2\r\nab", b"\rX"], "not followed by CRLF"),
        ([b"0\r\n" + b"t" * (MAX_LINE + 1) + b"\r\n"], "more than 4096 bytes"),  # a trailer line
    ],
)
def test_what_breaks_the_coding_is_refused_as_in_python(reads: list[bytes], error: str) -> None:
    python, _, _ = _python_reads(reads)
    c, _ = _c_reads(reads)
    assert c == python and error in c[-1]


# --- reads of a real connection -----------------------------------------------------------------
HEAD_OK = b"%x\r\n%s\r\n" % (len(b"data: 1\n\n"), b"data: 1\n\n")


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A loopback TCP connection: (the server's end, the client's end with kernel stamps on)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    yield server, client
    server.close()
    client.close()


class Sink:
    """What the stream tells: (owner, lines, stamp, end) per call."""

    def __init__(self) -> None:
        self.told: list[tuple[Any, list[bytes], int, Any]] = []

    def __call__(self, owner: Any, lines: list[bytes], stamp: int, end: Any) -> None:
        self.told.append((owner, lines, stamp, end))


def _stream(client: socket.socket, sink: Sink, option: int | None, stamp: int = 0) -> Any:
    return ChunkedStream("owner", sink, client.fileno(), option, 65536, stamp)


def _stamped(client: socket.socket) -> int:
    option = stamps.enable_stamps(client)
    assert option is not None, "this kernel refuses SO_TIMESTAMPNS"
    stamps.kernel_stamps_supported()  # its probe keeps the kernel stamping
    return option


def _wait_readable(sock: socket.socket) -> None:
    import select

    assert select.select([sock], [], [], 2.0)[0], "nothing came within 2 s"


def test_a_read_takes_the_kernels_stamp_on_the_monotonic_clock(connection: tuple[socket.socket, socket.socket]) -> None:
    server, client = connection
    option, sink = _stamped(client), Sink()
    stream, start = _stream(client, sink, option), stamps.READS.counts()
    assert stream.__self__ == "owner"  # gevent throws into a callback's __self__
    before = perf_ns()
    server.sendall(HEAD_OK)
    time.sleep(0.02)  # the stamp is when the bytes came, not when they were read
    _wait_readable(client)
    stream()
    read_at = perf_ns()
    [(owner, lines, stamp, end)] = sink.told
    assert owner == "owner" and lines == [b"data: 1", b""] and end is None
    assert before <= stamp <= read_at - 15_000_000, (stamp - before, read_at - stamp)
    assert stream.stamp == stamp == stream.partial_stamp
    assert stamps.READS.since(start)["kernel"] == 1


def test_nothing_there_tells_nothing_and_a_read_of_no_whole_line_neither(connection: tuple[socket.socket, socket.socket]) -> None:
    server, client = connection
    sink = Sink()
    stream = _stream(client, sink, _stamped(client))
    assert stream() is None and sink.told == []  # woken for nothing: EAGAIN
    server.sendall(b"4\r\nda")
    _wait_readable(client)
    stream()
    assert sink.told == [] and stream.partial == b"da"
    server.sendall(b"ta\r\n")
    _wait_readable(client)
    stream()
    assert sink.told == [] and stream.partial == b"data"


@pytest.mark.parametrize(
    ("sent", "end_of"),
    [
        (HEAD_OK + b"0\r\n\r\n", lambda end: end is True),  # the body's end
        (b"zz\r\n", lambda end: isinstance(end, ChunkedError) and "zz" in str(end)),
        (None, lambda end: end is False),  # the peer closed before the end
        (b"reset", lambda end: isinstance(end, ConnectionResetError) and end.errno == errno.ECONNRESET),
    ],
)
def test_how_a_read_ends_the_stream_is_told_once(connection: tuple[socket.socket, socket.socket], sent: bytes | None, end_of: Any) -> None:
    server, client = connection
    sink = Sink()
    stream = _stream(client, sink, _stamped(client))
    if sent == b"reset":
        server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server.close()
    elif sent is None:
        server.shutdown(socket.SHUT_WR)
    else:
        server.sendall(sent)
    _wait_readable(client)
    stream()
    [(_, lines, _, end)] = sink.told
    assert end_of(end), end
    assert lines == ([b"data: 1", b""] if end is True else [])
    stream()  # a later wake-up (there is none once it ended) reads nothing, tells nothing
    assert len(sink.told) == 1


def test_a_stamp_is_clamped_to_the_previous_one_and_now(connection: tuple[socket.socket, socket.socket]) -> None:
    server, client = connection
    sink, start = Sink(), stamps.READS.counts()
    stream = _stream(client, sink, _stamped(client), stamp=perf_ns() + HOUR_NS)  # the previous stamp in the future
    server.sendall(HEAD_OK)
    _wait_readable(client)
    stream()
    assert sink.told[0][2] <= perf_ns()  # now, not the hour ahead
    assert stamps.READS.since(start)["clamped"] == 1


def test_without_the_option_a_read_is_stamped_when_read(connection: tuple[socket.socket, socket.socket]) -> None:
    server, client = connection
    sink, start = Sink(), stamps.READS.counts()
    stream = _stream(client, sink, None)
    server.sendall(HEAD_OK)
    time.sleep(0.02)
    _wait_readable(client)
    before = perf_ns()
    stream()
    assert before <= sink.told[0][2] <= perf_ns()
    assert stamps.READS.since(start) == {"kernel": 0, "user": 1, "clamped": 0}


def test_the_clock_offset_is_sampled_again_after_a_millisecond(connection: tuple[socket.socket, socket.socket]) -> None:
    server, client = connection
    stream = _stream(client, Sink(), _stamped(client))
    loopread.forget_offset()
    server.sendall(HEAD_OK)
    _wait_readable(client)
    stream()
    offset, sampled = loopread.clock_offset()
    assert abs(offset - (perf_ns() - time.time_ns())) < 1_000_000 and 0 < perf_ns() - sampled < 1_000_000_000


@pytest.mark.parametrize(("option", "block_size"), [(-1, 65536), (2**40, 65536), ("x", 65536), (None, 0)])
def test_bad_arguments_are_refused(option: Any, block_size: int) -> None:
    with pytest.raises((ValueError, TypeError, OverflowError)):
        ChunkedStream(None, print, 0, option, block_size, 0)


def test_a_stream_not_initialized_refuses_to_read() -> None:
    with pytest.raises(TypeError, match="not initialized"):
        ChunkedStream.__new__(ChunkedStream)()
