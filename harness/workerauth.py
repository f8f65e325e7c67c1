"""Who may join a master as a worker: a shared secret, proven both ways when a worker joins.

Locust's master takes any process that connects to its worker port as a worker: it sends it
spawn messages (with every option) and merges the stats it reports. Here a worker joins only
once it has proven the secret that the master and every worker read from
`CLAUDE_LOADTEST_WORKER_SECRET`, and the master proves it too, so that a worker takes its
runs (and the host its API key goes to) only from the master it was meant for:

    worker -> master  client_ready       Locust's own: acknowledged, not passed on
    worker -> master  claude_join        {nonce}
    master -> worker  claude_challenge   {nonce: issued, proof: HMAC(secret, master, worker id, worker's nonce)}
    worker -> master  claude_proof       {nonce: issued, proof: HMAC(secret, worker, worker id, issued), locust: version}
                                         (only once the master's proof checked out; else claude_unproven)
    master            Locust gets the worker's client_ready now: it joins; or `claude_denied` {reason}

The master keeps no state per join under way: its nonce is `time/random:HMAC(secret, worker id, time/random)`,
good for `NONCE_TTL_S` and once only, so that a flood of joins costs memory for nothing but
the nonces actually used. The secret itself never travels, and fresh nonces on both sides
make a recorded handshake useless.

Until a worker has joined, the master drops every message it sends (counted, logged once per
worker) except Locust's request for the locustfile (code from the repository, which a `-f -`
worker needs before it can load the harness), and a message the master cannot even parse never
reaches Locust's listener (one would end it). A worker that Locust marks missing (or that quits)
must join again: its next message is answered with `claude_rejoin`. The channel is neither
encrypted nor authenticated per message: keep the worker port on a private network (README,
"Security").
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from hashlib import sha256
from typing import TYPE_CHECKING, Any

import gevent

from harness.credentials import WORKER_SECRET_ENV

if TYPE_CHECKING:
    from locust.runners import MasterRunner, WorkerRunner

logger = logging.getLogger("harness.workerauth")

JOIN_MESSAGE = "claude_join"
CHALLENGE_MESSAGE = "claude_challenge"
PROOF_MESSAGE = "claude_proof"
UNPROVEN_MESSAGE = "claude_unproven"
DENIED_MESSAGE = "claude_denied"
REJOIN_MESSAGE = "claude_rejoin"
JOIN_TIMEOUT_S = 60.0  # a worker whose master has not answered its join by then gives up
NONCE_TTL_S = 60.0
LOGGED_MAX = 1024  # distinct strangers logged by name (the rest only counted)
LAPSED_MAX = 4096  # workers that were joined, remembered to ask them to join again
CHECK_S = 1.0  # how often the master looks for joined workers Locust has marked missing


def proof(secret: bytes, role: str, client_id: str, nonce: str) -> str:
    """What a side that knows the secret answers to a nonce."""
    return hmac.new(secret, "\x00".join((role, client_id, nonce)).encode(), sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_hex(16)


class MasterGate:
    """The master's side: sits in front of Locust's message handler."""

    def __init__(self, runner: MasterRunner, secret: bytes, on_join: Callable[[str], None], clock: Callable[[], float] = time.time) -> None:
        self.runner = runner
        self.secret = secret
        self.on_join = on_join
        self.clock = clock
        self.joined: set[str] = set()
        self.lapsed: dict[str, None] = {}  # joined once, not now: asked to join again (insertion-ordered)
        self.used: dict[str, float] = {}  # issued nonces already answered, until they expire
        self.dropped_messages = 0
        self.denied = 0
        self._logged: set[str] = set()
        self._locust_handle = runner.handle_message
        runner.handle_message = self.handle_message  # type: ignore[method-assign]  # Locust's listener looks it up per message

    def start(self) -> None:
        """In a master process: Locust's listener survives any bytes, and workers Locust marks
        missing must join again (checked every CHECK_S)."""
        harden_receiving()
        gevent.spawn(self._watch_missing)

    def _watch_missing(self) -> None:
        while True:
            gevent.sleep(CHECK_S)
            self.drop_missing()

    def drop_missing(self) -> None:
        clients = self.runner.clients
        for client_id in [cid for cid in self.joined if cid in clients and clients[cid].state == "missing"]:
            self._lapse(client_id)

    def handle_message(self, client_id: str, msg: Any) -> None:
        try:
            self._handle(client_id, msg)
        except Exception as exc:  # a malformed message must not end Locust's listener
            self.dropped_messages += 1
            logger.warning("dropped a malformed %s message from %s: %s", getattr(msg, "type", "?"), client_id, exc)

    def _handle(self, client_id: str, msg: Any) -> None:
        if msg.node_id != client_id:  # a message that claims another sender's identity
            self._drop(client_id, msg)
        elif client_id in self.joined:
            self._locust_handle(client_id, msg)
            if msg.type == "quit":
                self._lapse(client_id)
        elif msg.type == "client_ready":
            # Locust's worker waits for this before its start-up goes on (and its plugin starts
            # the handshake); Locust gives it its index when it joins
            self.runner.send_message("ack", {"index": -1}, client_id=client_id)
        elif msg.type == JOIN_MESSAGE:
            self._challenge(client_id, msg.data)
        elif msg.type == PROOF_MESSAGE:
            self._check(client_id, msg)
        elif msg.type == UNPROVEN_MESSAGE:
            self.denied += 1
            logger.error("worker %s refused this master: it has another %s", client_id, WORKER_SECRET_ENV)
        elif msg.type == "locustfile" and isinstance(msg.data, dict) and isinstance(msg.data.get("version"), str):
            self._locust_handle(client_id, msg)
        else:
            self._drop(client_id, msg)

    def _issue(self, client_id: str) -> str:
        stamp = f"{self.clock():.6f}/{new_nonce()}"  # when, and unique even within a microsecond
        return f"{stamp}:{proof(self.secret, 'nonce', client_id, stamp)}"

    def _fresh(self, client_id: str, nonce: str) -> bool:
        """Issued by this master to this worker, not expired, not answered before."""
        now = self.clock()
        for old in [n for n, expires in self.used.items() if expires < now]:
            del self.used[old]
        stamp, _, mac = nonce.partition(":")
        try:
            age = now - float(stamp.partition("/")[0])
        except ValueError:
            return False
        authentic = hmac.compare_digest(mac, proof(self.secret, "nonce", client_id, stamp))
        return authentic and 0 <= age <= NONCE_TTL_S and nonce not in self.used

    def _challenge(self, client_id: str, data: Any) -> None:
        worker_nonce = data.get("nonce") if isinstance(data, dict) else None
        if not isinstance(worker_nonce, str) or not worker_nonce:
            self._deny(client_id, "a join without a nonce")
            return
        answer = {"nonce": self._issue(client_id), "proof": proof(self.secret, "master", client_id, worker_nonce)}
        self.runner.send_message(CHALLENGE_MESSAGE, answer, client_id=client_id)

    def _check(self, client_id: str, msg: Any) -> None:
        data = msg.data
        nonce = data.get("nonce") if isinstance(data, dict) else None
        given = data.get("proof") if isinstance(data, dict) else None
        if not isinstance(nonce, str) or not isinstance(given, str) or not self._fresh(client_id, nonce):
            self._deny(client_id, "a proof of no challenge of this master's (or of an expired or used one)")
            return
        if not hmac.compare_digest(given, proof(self.secret, "worker", client_id, nonce)):
            self._deny(client_id, f"wrong worker secret: set {WORKER_SECRET_ENV} to the master's")
            return
        self.used[nonce] = self.clock() + NONCE_TTL_S
        self.joined.add(client_id)
        self.lapsed.pop(client_id, None)
        logger.info("worker %s proved the worker secret: it joins", client_id)
        locust = data.get("locust") if isinstance(data.get("locust"), str) else -1
        self._locust_handle(client_id, type(msg)("client_ready", locust, client_id))  # Locust's Message
        self.on_join(client_id)

    def _deny(self, client_id: str, reason: str) -> None:
        self.denied += 1
        logger.error("worker %s refused: %s", client_id, reason)
        self.runner.send_message(DENIED_MESSAGE, {"reason": reason}, client_id=client_id)

    def _lapse(self, client_id: str) -> None:
        self.joined.discard(client_id)
        self.lapsed[client_id] = None
        while len(self.lapsed) > LAPSED_MAX:
            del self.lapsed[next(iter(self.lapsed))]

    def _drop(self, client_id: str, msg: Any) -> None:
        self.dropped_messages += 1
        if client_id in self.lapsed and msg.node_id == client_id:
            del self.lapsed[client_id]  # asked once: a worker that joins again is joined
            logger.warning("worker %s is no longer joined (missing or quit): asking it to join again", client_id)
            self.runner.send_message(REJOIN_MESSAGE, None, client_id=client_id)
            return
        if client_id not in self._logged and len(self._logged) < LOGGED_MAX:
            self._logged.add(client_id)
            logger.warning(
                "ignoring %s messages from %s: it has not joined with the worker secret (%s)", msg.type, client_id, WORKER_SECRET_ENV
            )


def harden_receiving() -> None:
    """Locust's master listener ends on any error parsing a message but two kinds (its loop has
    no other handler): bytes that are no message are turned into the error it expects. Once per
    process, on the class (Locust makes a new server socket when it resets the connection)."""
    from locust.exception import RPCError, RPCReceiveError
    from locust.rpc import zmqrpc

    original = zmqrpc.BaseSocket.recv_from_client
    if getattr(original, "hardened", False):
        return

    def recv_from_client(self: Any) -> Any:
        try:
            return original(self)
        except RPCError:
            raise
        except Exception as exc:
            raise RPCReceiveError(f"not a Locust message ({type(exc).__name__}: {exc})") from exc

    recv_from_client.hardened = True  # type: ignore[attr-defined]
    zmqrpc.BaseSocket.recv_from_client = recv_from_client  # type: ignore[method-assign]


class WorkerGate:
    """A worker's side: starts the handshake, checks the master's proof, answers with its own."""

    def __init__(self, runner: WorkerRunner, secret: bytes, on_denied: Callable[[str], None], locust_version: str = "") -> None:
        self.runner = runner
        self.secret = secret
        self.on_denied = on_denied
        self.locust_version = locust_version  # what Locust's own client_ready would have said
        self.master_proven = False
        self._answered = False
        runner.register_message(CHALLENGE_MESSAGE, self._on_challenge)
        runner.register_message(DENIED_MESSAGE, lambda msg, **_: self.on_denied(str(msg.data.get("reason"))))
        runner.register_message(REJOIN_MESSAGE, lambda **_: self.join())
        self.join()
        gevent.spawn_later(JOIN_TIMEOUT_S, self._check_answered)

    def join(self) -> None:
        self.nonce = new_nonce()
        self.runner.send_message(JOIN_MESSAGE, {"nonce": self.nonce})

    def _check_answered(self) -> None:
        if not self._answered:
            where = f"{self.runner.master_host}:{self.runner.master_port}"
            self.on_denied(
                f"the master at {where} did not answer the join within {JOIN_TIMEOUT_S:.0f} s: is it a master of this harness version?"
            )

    def _on_challenge(self, msg: Any, **_: Any) -> None:
        self._answered = True
        data = msg.data if isinstance(msg.data, dict) else {}
        client_id = self.runner.client_id
        master_nonce = data.get("nonce")
        if not hmac.compare_digest(str(data.get("proof")), proof(self.secret, "master", client_id, self.nonce)) or not isinstance(
            master_nonce, str
        ):
            self.master_proven = False
            self.runner.send_message(UNPROVEN_MESSAGE, None)  # no proof for a master that could not give its own
            where = f"{self.runner.master_host}:{self.runner.master_port}"
            self.on_denied(f"the master at {where} did not prove the worker secret: it is not configured with this {WORKER_SECRET_ENV}")
            return
        self.master_proven = True
        answer = {"nonce": master_nonce, "proof": proof(self.secret, "worker", client_id, master_nonce), "locust": self.locust_version}
        self.runner.send_message(PROOF_MESSAGE, answer)
