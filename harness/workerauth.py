"""Who may join a master as a worker: a shared secret, proven both ways when a worker joins.

Locust's master takes any process that connects to its worker port as a worker: it sends it
spawn messages (with every option) and merges the stats it reports. Here a worker joins only
once it has proven the secret that the master and every worker read from
`CLAUDE_LOADTEST_WORKER_SECRET`, and the master proves it too, so that a worker takes its
runs (and the host its API key goes to) only from the master it was meant for:

    worker -> master  client_ready            Locust's own: held back, but acknowledged
    worker -> master  claude_join             {nonce}
    master -> worker  claude_challenge        {nonce, proof: HMAC(secret, master, worker id, worker's nonce)}
    worker -> master  claude_proof            {proof: HMAC(secret, worker, worker id, master's nonce)}
    master            the held client_ready goes to Locust now: the worker joins;
                      or `claude_denied` {reason}: the worker quits with exit code 2

The secret itself never travels, and fresh nonces on both sides make a recorded handshake
useless. Until a worker has joined, the master drops every message it sends (counted, logged
once per worker) except Locust's request for the locustfile (code from the repository, which a
`-f -` worker needs before it can load the harness). The channel is not encrypted: keep the
worker port on a private network (README, "Security").
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any, Callable

import gevent

from harness.credentials import WORKER_SECRET_ENV

logger = logging.getLogger("harness.workerauth")

JOIN_MESSAGE = "claude_join"
CHALLENGE_MESSAGE = "claude_challenge"
PROOF_MESSAGE = "claude_proof"
DENIED_MESSAGE = "claude_denied"
PUBLIC_MESSAGES = ("locustfile",)  # what a process that has not joined may still ask for
JOIN_TIMEOUT_S = 60.0  # a worker whose master has not answered its join by then gives up
PENDING_MAX = 256  # joins under way at once (more: the oldest is forgotten)
PENDING_TTL_S = 60.0
LOGGED_MAX = 1024  # distinct strangers logged by name (the rest only counted)


def proof(secret: bytes, role: str, client_id: str, nonce: str) -> str:
    """What a side that knows the secret answers to a nonce."""
    return hmac.new(secret, "\x00".join((role, client_id, nonce)).encode(), sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(16)


@dataclass
class PendingJoin:
    """A worker that connected and has not proven the secret yet."""

    held: list[Any] = field(default_factory=list)  # its client_ready, for Locust once it joins
    nonce: str | None = None  # the challenge sent to it
    since: float = field(default_factory=time.monotonic)


class MasterGate:
    """The master's side: sits in front of Locust's message handler."""

    def __init__(self, runner: Any, secret: bytes, on_join: Callable[[str], None]) -> None:
        self.runner = runner
        self.secret = secret
        self.on_join = on_join
        self.joined: set[str] = set()
        self.pending: OrderedDict[str, PendingJoin] = OrderedDict()
        self.dropped_messages = 0
        self.denied = 0
        self._logged: set[str] = set()
        self._locust_handle = runner.handle_message
        runner.handle_message = self.handle_message  # looked up by Locust's listener per message

    def handle_message(self, client_id: str, msg: Any) -> None:
        if msg.node_id != client_id:  # a message that claims another sender's identity
            self._drop(client_id, msg)
        elif client_id in self.joined:
            self._locust_handle(client_id, msg)
            if msg.type == "quit":
                self.joined.discard(client_id)
        elif msg.type == "client_ready":
            self._pending(client_id).held = [msg]
            # Locust's worker waits for this before its start-up goes on (and its plugin
            # starts the handshake); the index is the one Locust gives it when it joins
            self.runner.send_message("ack", {"index": self.runner.get_worker_index(client_id)}, client_id=client_id)
        elif msg.type == JOIN_MESSAGE:
            self._challenge(client_id, msg.data)
        elif msg.type == PROOF_MESSAGE:
            self._check(client_id, msg.data)
        elif msg.type in PUBLIC_MESSAGES:
            self._locust_handle(client_id, msg)
        else:
            self._drop(client_id, msg)

    def _pending(self, client_id: str) -> PendingJoin:
        now = time.monotonic()
        while self.pending and (len(self.pending) >= PENDING_MAX or now - next(iter(self.pending.values())).since > PENDING_TTL_S):
            self.pending.popitem(last=False)
        join = self.pending.get(client_id)
        if join is None:
            join = self.pending[client_id] = PendingJoin()
        return join

    def _challenge(self, client_id: str, data: Any) -> None:
        worker_nonce = data.get("nonce") if isinstance(data, dict) else None
        if not isinstance(worker_nonce, str) or not worker_nonce:
            self._deny(client_id, "a join without a nonce")
            return
        join = self._pending(client_id)
        join.nonce = new_nonce()
        answer = {"nonce": join.nonce, "proof": proof(self.secret, "master", client_id, worker_nonce)}
        self.runner.send_message(CHALLENGE_MESSAGE, answer, client_id=client_id)

    def _check(self, client_id: str, data: Any) -> None:
        join = self.pending.pop(client_id, None)
        given = data.get("proof") if isinstance(data, dict) else None
        if join is None or join.nonce is None or not isinstance(given, str):
            self._deny(client_id, "a proof without a challenge")
            return
        if not hmac.compare_digest(given, proof(self.secret, "worker", client_id, join.nonce)):
            self._deny(client_id, f"wrong worker secret: set {WORKER_SECRET_ENV} to the master's")
            return
        self.joined.add(client_id)
        logger.info("worker %s proved the worker secret: it joins", client_id)
        for held in join.held:
            self._locust_handle(client_id, held)
        self.on_join(client_id)

    def _deny(self, client_id: str, reason: str) -> None:
        self.denied += 1
        self.pending.pop(client_id, None)
        logger.error("worker %s refused: %s", client_id, reason)
        self.runner.send_message(DENIED_MESSAGE, {"reason": reason}, client_id=client_id)

    def _drop(self, client_id: str, msg: Any) -> None:
        self.dropped_messages += 1
        if client_id in self.pending:
            return  # a heartbeat while its join is under way
        if client_id not in self._logged and len(self._logged) < LOGGED_MAX:
            self._logged.add(client_id)
            logger.warning(
                "ignoring %s messages from %s: it has not joined with the worker secret (%s)", msg.type, client_id, WORKER_SECRET_ENV
            )  # fmt: skip


class WorkerGate:
    """A worker's side: starts the handshake, checks the master's proof, answers with its own."""

    def __init__(self, runner: Any, secret: bytes, on_denied: Callable[[str], None]) -> None:
        self.runner = runner
        self.secret = secret
        self.on_denied = on_denied
        self.master_proven = False
        self.nonce = new_nonce()
        runner.register_message(CHALLENGE_MESSAGE, self._on_challenge)
        runner.register_message(DENIED_MESSAGE, lambda msg, **_: self.on_denied(str(msg.data.get("reason"))))
        runner.send_message(JOIN_MESSAGE, {"nonce": self.nonce})
        self._answered = False
        gevent.spawn_later(JOIN_TIMEOUT_S, self._check_answered)

    def _check_answered(self) -> None:
        if not self._answered:
            where = f"{self.runner.master_host}:{self.runner.master_port}"
            self.on_denied(f"the master at {where} did not answer the join within {JOIN_TIMEOUT_S:.0f} s: is it a master of this harness version?")

    def _on_challenge(self, msg: Any, **_: Any) -> None:
        self._answered = True
        data = msg.data if isinstance(msg.data, dict) else {}
        client_id = self.runner.client_id
        expected = proof(self.secret, "master", client_id, self.nonce)
        master_nonce = data.get("nonce")
        if not isinstance(master_nonce, str):
            master_nonce = ""
        self.master_proven = hmac.compare_digest(str(data.get("proof")), expected)
        # answered either way: a master with another secret then logs the refusal too
        self.runner.send_message(PROOF_MESSAGE, {"proof": proof(self.secret, "worker", client_id, master_nonce)})
        if not self.master_proven:
            where = f"{self.runner.master_host}:{self.runner.master_port}"
            self.on_denied(f"the master at {where} did not prove the worker secret: it is not configured with this {WORKER_SECRET_ENV}")
