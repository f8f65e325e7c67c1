"""harness/bedrock_frames.py: a Bedrock stream's AWS event-stream messages, however they are cut
by the network, give the API's events; a broken one ends the stream with BrokenFrame. The
messages are built by the emulator's own encoder (harness/emulator/platforms.py)."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.bedrock_frames import BrokenFrame, bedrock_lines
from harness.emulator.platforms import event_stream_message

CHUNK = ((":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event"))
EVENTS = [
    {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 3}}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "h\u00e9llo \u2028 there"}},
    {"type": "message_stop"},
]


def chunk_of(event: bytes) -> bytes:
    return event_stream_message(CHUNK, json.dumps({"bytes": base64.b64encode(event).decode()}).encode())


STREAM = b"".join(chunk_of(json.dumps(event).encode()) for event in EVENTS)
LAST = len(chunk_of(json.dumps(EVENTS[-1]).encode()))  # the last message's length


def read(pieces: list[bytes]) -> list[tuple[int, list[bytes]]]:
    clock: Iterator[int] = iter(range(1, 1000))
    return list(bedrock_lines(iter(pieces), lambda: next(clock)))


def events_of(timed: list[tuple[int, list[bytes]]]) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for _, lines in timed for line in lines if line.startswith(b"data: ")]


@given(st.lists(st.integers(0, len(STREAM)), max_size=8))
def test_a_stream_cut_anywhere_gives_its_events_when_their_last_bytes_came(cuts: list[int]) -> None:
    edges = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(edges)]
    timed = read(pieces)
    assert events_of(timed) == EVENTS
    ends = [len(chunk_of(json.dumps(e).encode())) for e in EVENTS]
    for (stamp, lines), end in zip(timed, [sum(ends[: i + 1]) for i in range(len(ends))]):
        arrived = next(i for i, edge in enumerate(edges[1:], 1) if edge >= end)  # the piece with the message's last byte
        assert stamp == arrived and lines[0] == b"event: " + json.loads(lines[1][6:])["type"].encode() and lines[2] == b""


def test_an_exception_message_is_the_apis_error_event() -> None:
    headers = ((":exception-type", "throttlingException"), (":content-type", "application/json"), (":message-type", "exception"))
    timed = read([chunk_of(json.dumps(EVENTS[0]).encode()) + event_stream_message(headers, b'{"message":"Too many requests"}')])
    assert events_of(timed)[1] == {"type": "error", "error": {"type": "throttlingException", "message": "Too many requests"}}
    assert timed[1][1][0] == b"event: error"


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize(
    ("stream", "says"),
    [
        (_flip_last(STREAM), "does not hold"),  # the last message's CRC
        (STREAM[:5] + b"\xff" + STREAM[6:], "does not hold"),  # the first prelude's length
        (STREAM[:-3], f"ended inside an event-stream message ({LAST - 3} bytes"),
        (event_stream_message(CHUNK, b"not json"), "holds no API event"),
        (event_stream_message(CHUNK, b'{"no":"bytes"}'), "holds no API event"),
        (event_stream_message(CHUNK, b'{"bytes":"%%%"}'), "holds no API event"),
        (chunk_of(b"[1, 2]"), "holds no API event"),
        (chunk_of(b'{"no": "type"}'), "holds no API event"),
    ],
)
def test_a_broken_message_ends_the_stream_with_what_broke(stream: bytes, says: str) -> None:
    with pytest.raises(BrokenFrame, match=says.replace("(", r"\(")):
        read([stream])
