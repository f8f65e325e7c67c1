"""The chunked transfer coding undone as bytes arrive (harness/chunked.py): every way a body can
be cut into reads gives the same data, and what breaks the coding is refused."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.chunked import MAX_LINE, ChunkedBody, ChunkedError

EVENTS = [b'event: ping\ndata: {"type":"ping"}\n\n', b"data: " + b"x" * 300 + b"\n\n", b"data: \xc3\xa9\n\n"]
BODY = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in EVENTS) + b"0\r\n\r\n"


def decoded(reads: list[bytes]) -> tuple[bytes, ChunkedBody]:
    body = ChunkedBody()
    data = b"".join(body.feed(read) for read in reads)
    return data, body


def cut(data: bytes, at: list[int]) -> list[bytes]:
    edges = [0, *sorted(set(at)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def test_one_whole_chunk_per_read_and_the_last_chunk_end_the_body() -> None:
    body = ChunkedBody()
    assert [body.feed(b"%x\r\n%s\r\n" % (len(event), event)) for event in EVENTS] == EVENTS
    assert not body.complete
    assert body.feed(b"0\r\n\r\n") == b"" and body.complete and body.excess == b""


def test_several_whole_chunks_in_one_read_then_one_cut_short() -> None:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in EVENTS)
    body = ChunkedBody()
    assert body.feed(chunks + b"4\r\nab") == b"".join(EVENTS) + b"ab"
    assert body.feed(b"cd\r\n0\r\n\r\n") == b"cd" and body.complete


@given(st.lists(st.integers(min_value=1, max_value=len(BODY) - 1), max_size=12))
def test_a_body_cut_anywhere_decodes_alike(at: list[int]) -> None:
    data, body = decoded(cut(BODY, at))
    assert data == b"".join(EVENTS) and body.complete and body.excess == b""


def test_a_body_read_byte_by_byte() -> None:
    data, body = decoded([BODY[i : i + 1] for i in range(len(BODY))])
    assert data == b"".join(EVENTS) and body.complete


def test_extensions_trailers_uppercase_sizes_and_bare_line_feeds_are_understood() -> None:
    raw = b"1A;name=value\r\n" + b"a" * 26 + b"\r\n3 ; ext\n" + b"abc\r\n0\r\nx-trailer: 1\r\n\r\n"
    data, body = decoded([raw])
    assert data == b"a" * 26 + b"abc" and body.complete


def test_bytes_after_the_end_are_kept_apart() -> None:
    data, body = decoded([BODY + b"HTTP/1.1 200 OK\r\n"])
    assert data == b"".join(EVENTS) and body.complete and body.excess == b"HTTP/1.1 200 OK\r\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"zz\r\nab\r\n",  # not hexadecimal
        b"0x2\r\nab\r\n",  # a prefix int() would take
        b"+2\r\nab\r\n",
        b"1_0\r\n",
        b"-1\r\n",
        b"\r\nab\r\n",  # no size
        b"1000000000000000\r\n",  # 16 digits: 2**60 and more
        b"2\r\nabXY",  # the data's CRLF missing
        b"2\r\nab\n",
    ],
)
def test_what_breaks_the_coding_is_refused(raw: bytes) -> None:
    with pytest.raises(ChunkedError):
        decoded(cut(raw, [1, 3]))
    with pytest.raises(ChunkedError):
        decoded([raw])


def test_a_size_line_without_its_end_is_refused_beyond_the_limit() -> None:
    body = ChunkedBody()
    body.feed(b"1" + b" " * (MAX_LINE - 1))  # within the limit: waits for the line's end
    with pytest.raises(ChunkedError):
        body.feed(b" " * 2)
