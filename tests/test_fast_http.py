"""The fast transport's request head, built once (harness.fast_http.py): it says what
geventhttpclient's own head says, and refuses what could split a request."""

from __future__ import annotations

import pytest
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPResponse

from harness.fast_http import Fields, RequestHead

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
