"""The fast transport's own HTTP (harness/fast_http.py): the request head, built once, says
what geventhttpclient's own head says and refuses what could split a request; a stream's
response head, parsed here, gives the fields geventhttpclient's parser gives, and any head of
another shape is left to that parser."""

from __future__ import annotations

import pytest
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPResponse
from hypothesis import given
from hypothesis import strategies as st

from harness.fast_http import Fields, RequestHead, _event_stream_fields

HEADERS = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01", "content-type": "application/json"}
BODY = b'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}'


def parsed(request: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = request.partition(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    return first, {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}, body


def geventhttpclients(host: str, port: int, headers: dict[str, str]) -> bytes:
    client = HTTPClient(host, port)
    return client._build_request("POST", "/v1/messages", body=BODY, headers=headers, chunked=False).encode("latin-1") + BODY


@pytest.mark.parametrize(("host", "port"), [("127.0.0.1", 8080), ("api.example.com", 443), ("::1", 80)])
def test_the_head_says_what_geventhttpclients_says(host: str, port: int) -> None:
    defaults = dict(HTTPClient(host, port).default_headers.items())
    head = RequestHead(host, port, "/v1/messages", {**defaults, **HEADERS})
    assert parsed(head.of(BODY)) == parsed(geventhttpclients(host, port, HEADERS))
    # a variant's headers replace the target's of the same name, whatever their case
    variant = {"Anthropic-Version": "2026-10-21", "anthropic-beta": "b1"}
    mine = parsed(head.of(BODY, variant))
    assert mine == parsed(geventhttpclients(host, port, {**HEADERS, **variant}))
    assert mine[1]["anthropic-version"] == "2026-10-21" and parsed(head.of(BODY))[1]["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize("headers", [{"x-api-key": "sk\r\nx-evil: 1"}, {"bad name": "v"}, {"x": "line\nbreak"}])
def test_a_header_that_could_split_the_request_is_refused_without_its_value(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError) as error:
        RequestHead("127.0.0.1", 80, "/v1/messages", headers)
    assert "sk" not in str(error.value) and "break" not in str(error.value)
    head = RequestHead("127.0.0.1", 80, "/v1/messages", HEADERS)
    with pytest.raises(ValueError):
        head.of(BODY, headers)


def test_a_responses_fields_by_lowercase_name_a_repeated_one_joined() -> None:
    response = HTTPResponse("POST", headers_type=Fields)
    response.feed(
        b"HTTP/1.1 429 Too Many Requests\r\nRequest-Id: req_1\r\nretry-after: 3\r\nVia: a\r\nvia: b\r\ncontent-length: 2\r\n\r\n{}"
    )
    assert response.get("request-id") == "req_1" and response.get("Retry-After") == "3" and response.get("x-missing") is None
    assert response.get("via") == "a, b" and response["VIA"] == "a, b" and "request-id" in response and 1 not in response.info()
    assert response.content_length == 2 and response.message_complete and response.status_code == 429


# --- a stream's head parsed here (EventStreamResponse), every other head by geventhttpclient ---
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: keep-alive\r\nrequest-id: req_01\r\nanthropic-ratelimit-requests-remaining:\t49 \r\n"
    b"Via: a\r\nvia: b\r\nx-empty:\r\n\r\n"
)


def llhttps_fields(head: bytes) -> dict[str, str]:
    response = HTTPResponse("POST", headers_type=Fields)
    response.feed(head)
    assert response.headers_complete and response.status_code == 200
    return dict(response.info())


@given(st.lists(st.sampled_from(["X-A: 1", "x-a:2", "X-B:  spaced  ", "x-c:\t", 'X-D: a,b; c="d"', "x-e: ~!#"]), max_size=6))
def test_a_streams_head_gives_the_fields_geventhttpclients_parser_gives(extra: list[str]) -> None:
    head = STREAM_HEAD[:-2] + b"".join(line.encode() + b"\r\n" for line in extra) + b"\r\n"
    fields = _event_stream_fields(head)
    assert fields is not None and dict(fields) == llhttps_fields(head)
    assert fields.get("Request-Id") == "req_01" and fields["via"] == "a, b"


@pytest.mark.parametrize(
    "change",
    [
        (b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK"),  # not kept alive unless it says so
        (b"HTTP/1.1 200 OK", b"HTTP/1.1 201 Created"),
        (b"HTTP/1.1 200 OK", b"HTTP/1.1 2000 OK"),
        (b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked"),
        (b"Transfer-Encoding: chunked", b"Content-Length: 10"),
        (b"Via: a", b"Content-Length: 10"),  # with chunked too
        (b"Via: a", b"Content-Encoding: gzip"),
        (b"Connection: keep-alive", b"Connection: close"),
        (b"text/event-stream", b"application/json"),
        (b"Via: a\r\n", b"Via: a\r\n folded\r\n"),  # an obsolete line folding
        (b"Via: a\r\n", b"Via: a\n"),  # a bare line feed
        (b"Via: a", b"Via: caf\xc3\xa9"),  # not ASCII
        (b"Via: a", b"Via: a\x00"),  # a control character
        (b"Via: a", b"V a: a"),  # not a token
        (b"Via: a", b"Via : a"),
        (b"Via: a", b": a"),
    ],
)
def test_any_other_head_is_left_to_geventhttpclients_parser(change: tuple[bytes, bytes]) -> None:
    old, new = change
    assert old in STREAM_HEAD
    assert _event_stream_fields(STREAM_HEAD.replace(old, new, 1)) is None
