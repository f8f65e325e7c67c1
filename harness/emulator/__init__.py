"""A stand-in Claude Messages API server for tests and demos: `python -m harness.emulator`.

    python -m harness.emulator --host 127.0.0.1 --port 0 [--profile FILE] [--seed S]
                               [--ground-truth FILE] [--no-uvloop] [-v]

On start it prints exactly one line to stdout: ``emulator listening on http://HOST:PORT``.
SIGTERM/SIGINT close it cleanly (ground truth flushed, exit 0).  Exit 2 on a bad profile.

Endpoints: ``POST /v1/messages`` (streaming SSE and blocking), ``POST
/v1/messages/count_tokens``, ``GET /v1/models`` and ``GET /v1/models/{id}``; the API's
error shape ``{"type":"error","error":{"type","message"},"request_id"}`` for 400 / 401
/ 404 / 413 / 429 / 500 / 529.  Every response carries ``request-id``; Messages
responses carry ``anthropic-ratelimit-*`` headers (token buckets, see `profile`).

Input tokens (count_tokens and usage.input_tokens) are counted by words (each word
1 + utf8 bytes // 7) plus 3 per message, a rule of the emulator's own (not the harness's 4
bytes per token): see `validate`. A request with tools is answered with a tool call, its
tool_result with text: see `planning`.

Latency, output lengths and faults come from a YAML profile (`profile`); all random
draws of request number *n* come from ``random.Random(seed * 1000003 + n)``, so the same
seed and the same sequence of Messages requests give the same lengths, timings and faults.

Ground truth (``--ground-truth``): one JSON line per request when it finishes, with
``time.perf_counter_ns()`` timestamps (CLOCK_MONOTONIC on Linux, comparable across
processes), each taken immediately before the corresponding socket write:
request_id, path, form (api, vertex or bedrock: the platform whose form the request had),
auth (x-api-key, bearer or sigv4: how it authenticated), header_digests (a sha256
prefix of each header beyond the plain ones, never a value), model, stream, status (null if no
response was sent), outcome (ok |
rate_limited | overloaded | api_error | invalid_request | unauthorized | not_found |
stream_error | disconnect | client_closed | shutdown), error_type, seq (Messages
sequence number), input_tokens (as usage gives them: neither read from nor written to the
prompt cache), cache_read_tokens, cache_creation_tokens (see `caching`), output_tokens
(delivered so far for a broken stream),
stop_reason, t_received_ns, t_headers_ns, t_first_thinking_ns, t_first_text_ns,
t_last_token_ns, t_end_ns, scheduled_first_text_ns, scheduled_end_ns, queued_ns (the wait
for a server of the model's capacity: its response starts that much later), reply_digest
(of the reply's text or tool input) and context_digests (of each assistant message the request
carried: a conversation's next turn shows whether it sent back the real reply).
"""

from harness.emulator.profile import Profile, ProfileError, default_profile, load_profile
from harness.emulator.validate import count_input_tokens

__all__ = ["Profile", "ProfileError", "count_input_tokens", "default_profile", "load_profile", "main"]


def main(argv: list[str] | None = None) -> int:
    from harness.emulator.cli import main as _main

    return _main(argv)
