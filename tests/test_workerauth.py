"""The join handshake's state machine, both sides wired to each other in memory.

The real master and workers (separate processes, a stranger on this machine's network address)
are in test_security.py; here every branch of the protocol is driven message by message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from harness.workerauth import (
    CHALLENGE_MESSAGE,
    DENIED_MESSAGE,
    JOIN_MESSAGE,
    NONCE_TTL_S,
    PROOF_MESSAGE,
    REJOIN_MESSAGE,
    MasterGate,
    WorkerGate,
    proof,
)

SECRET = b"the-shared-secret-of-the-tests"


@dataclass
class Message:
    type: str
    data: Any
    node_id: str


class MasterRunner:
    """What MasterGate uses of Locust's master runner: its handler, send_message, worker indexes."""

    def __init__(self) -> None:
        self.locust_saw: list[tuple[str, str]] = []  # what reached Locust's own handler
        self.clients: dict[str, Any] = {}  # Locust's workers: id -> node with a state
        self.sent: list[tuple[str | None, str, Any]] = []
        self.workers: dict[str, WorkerRunner] = {}
        self.indexes: dict[str, int] = {}

    def handle_message(self, client_id: str, msg: Message) -> None:
        self.locust_saw.append((client_id, msg.type))

    def send_message(self, msg_type: str, data: Any = None, client_id: str | None = None) -> None:
        self.sent.append((client_id, msg_type, data))
        if client_id in self.workers:
            self.workers[client_id].receive(Message(msg_type, data, client_id))

    def get_worker_index(self, client_id: str) -> int:
        return self.indexes.setdefault(client_id, len(self.indexes))


class WorkerRunner:
    """What WorkerGate uses of Locust's worker runner; its messages go straight to the master."""

    master_host, master_port = "127.0.0.1", 5557

    def __init__(self, client_id: str, master: MasterRunner) -> None:
        self.client_id = client_id
        self.master = master
        self.handlers: dict[str, Callable[..., None]] = {}
        self.received: list[str] = []
        master.workers[client_id] = self

    def register_message(self, msg_type: str, handler: Callable[..., None]) -> None:
        self.handlers[msg_type] = handler

    def send_message(self, msg_type: str, data: Any = None) -> None:
        self.master.handle_message(self.client_id, Message(msg_type, data, self.client_id))

    def receive(self, msg: Message) -> None:
        self.received.append(msg.type)
        if msg.type in self.handlers:
            self.handlers[msg.type](msg=msg)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def master_gate(runner: MasterRunner, secret: bytes = SECRET, clock: Clock | None = None) -> tuple[MasterGate, list[str]]:
    joined: list[str] = []
    return MasterGate(runner, secret, joined.append, clock or Clock()), joined


def connect(master: MasterRunner, client_id: str, secret: bytes) -> tuple[WorkerRunner, WorkerGate, list[str]]:
    """A worker as Locust starts it: client_ready first (acknowledged, not passed on), then the join."""
    worker = WorkerRunner(client_id, master)
    worker.send_message("client_ready", "2.47.0")
    denials: list[str] = []
    return worker, WorkerGate(worker, secret, denials.append, "2.47.0"), denials


def challenge_of(master: MasterRunner, client_id: str) -> dict[str, Any]:
    return [data for client, msg_type, data in master.sent if msg_type == CHALLENGE_MESSAGE and client == client_id][-1]


def test_a_worker_with_the_secret_joins_and_locust_learns_of_it_only_then() -> None:
    master = MasterRunner()
    gate, joined = master_gate(master)
    worker = WorkerRunner("w1", master)
    worker.send_message("client_ready", "2.47.0")
    assert master.locust_saw == [] and master.sent == [("w1", "ack", {"index": -1})]  # acknowledged only
    worker.send_message("heartbeat", {"state": "ready"})
    assert master.locust_saw == []
    worker_gate = WorkerGate(worker, SECRET, lambda reason: None, "2.47.0")
    assert worker_gate.master_proven
    assert master.locust_saw == [("w1", "client_ready")] and joined == ["w1"]
    worker.send_message("stats", {})
    assert master.locust_saw[-1] == ("w1", "stats")
    assert gate.denied == 0 and "w1" in gate.joined


def test_a_worker_with_another_secret_sends_no_proof_and_never_joins() -> None:
    master = MasterRunner()
    gate, joined = master_gate(master)
    worker, worker_gate, denials = connect(master, "w1", b"another-secret-entirely")
    assert not worker_gate.master_proven
    assert any("did not prove the worker secret" in reason for reason in denials)
    assert gate.denied == 1  # the master logged the worker's refusal: it sent no proof
    worker.send_message("stats", {"claude": {"fake": True}})
    worker.send_message("client_ready", "2.47.0")
    assert master.locust_saw == [] and joined == []


def test_a_proof_made_with_another_secret_is_refused() -> None:
    master = MasterRunner()
    gate, joined = master_gate(master)
    worker = WorkerRunner("w1", master)
    worker.send_message(JOIN_MESSAGE, {"nonce": "n1"})
    issued = challenge_of(master, "w1")["nonce"]
    worker.send_message(PROOF_MESSAGE, {"nonce": issued, "proof": proof(b"another-secret", "worker", "w1", issued)})
    assert DENIED_MESSAGE in worker.received and joined == [] and gate.denied == 1


def test_a_stranger_without_the_handshake_gets_an_ack_and_nothing_else() -> None:
    master = MasterRunner()
    gate, joined = master_gate(master)
    stranger = WorkerRunner("s1", master)
    for msg_type in ("client_ready", "heartbeat", "stats", "spawning", "claude_drained", "exception"):
        stranger.send_message(msg_type, {})
    assert master.locust_saw == [] and joined == []
    assert [msg_type for _, msg_type, _ in master.sent] == ["ack"]
    stranger.send_message("locustfile", None)  # what would crash Locust's handler: dropped
    stranger.send_message("locustfile", {"version": "2.47.0"})  # code from the repository: public
    assert master.locust_saw == [("s1", "locustfile")]
    assert gate.dropped_messages == 6


def test_a_malformed_message_never_reaches_locusts_listener_as_an_error() -> None:
    master = MasterRunner()
    gate, _ = master_gate(master)

    def crash(client_id: str, msg: Message) -> None:
        raise TypeError("'NoneType' object is not subscriptable")

    gate._locust_handle = crash
    gate.handle_message("s1", Message("locustfile", {"version": "x"}, "s1"))  # would end the listener
    gate.handle_message("s1", Message(PROOF_MESSAGE, ["not", "a", "dict"], "s1"))
    assert gate.dropped_messages == 1 and gate.denied == 1


def test_a_challenge_is_answered_once_for_its_worker_within_its_time() -> None:
    master, clock = MasterRunner(), Clock()
    gate, joined = master_gate(master, clock=clock)
    connect(master, "w1", SECRET)
    issued = challenge_of(master, "w1")["nonce"]
    recorded = proof(SECRET, "worker", "w1", issued)
    gate._lapse("w1")  # as if w1 had quit: its id is free again
    for client_id in ("w1", "w1-copy"):  # a replay of w1's proof: once used, and for another id
        replay = WorkerRunner(client_id, master)
        replay.send_message(PROOF_MESSAGE, {"nonce": issued, "proof": recorded})
        assert DENIED_MESSAGE in replay.received
    late = WorkerRunner("w2", master)
    late.send_message(JOIN_MESSAGE, {"nonce": "n2"})
    issued = challenge_of(master, "w2")["nonce"]
    clock.now += NONCE_TTL_S + 1
    late.send_message(PROOF_MESSAGE, {"nonce": issued, "proof": proof(SECRET, "worker", "w2", issued)})
    assert DENIED_MESSAGE in late.received and joined == ["w1"]


def test_a_flood_of_joins_keeps_no_state_and_locks_nobody_out() -> None:
    master = MasterRunner()
    gate, joined = master_gate(master)
    for index in range(5000):
        WorkerRunner(f"s{index}", master).send_message(JOIN_MESSAGE, {"nonce": str(index)})
    assert gate.used == {} and gate.lapsed == {}
    connect(master, "w1", SECRET)
    assert joined == ["w1"]


def test_a_message_claiming_another_senders_identity_is_dropped() -> None:
    master = MasterRunner()
    gate, _joined = master_gate(master)
    connect(master, "w1", SECRET)
    master.locust_saw.clear()
    gate.handle_message("attacker", Message("stats", {}, "w1"))  # routed from one id, claiming another
    assert master.locust_saw == [] and gate.dropped_messages == 1


def test_a_worker_that_quits_or_goes_missing_must_join_again() -> None:
    master = MasterRunner()
    gate, joined = master_gate(master)
    worker, _, _ = connect(master, "w1", SECRET)
    worker.send_message("quit", None)
    assert "w1" not in gate.joined and master.locust_saw[-1] == ("w1", "quit")
    master.locust_saw.clear()
    worker.send_message("heartbeat", {})  # answered by a request to join again, which it does
    assert REJOIN_MESSAGE in worker.received and joined == ["w1", "w1"] and master.locust_saw == [("w1", "client_ready")]
    master.clients["w1"] = SimpleNamespace(state="missing")
    gate.drop_missing()
    assert "w1" not in gate.joined
    stranger = WorkerRunner("w1-spoof", master)
    stranger.send_message("stats", {})
    assert REJOIN_MESSAGE not in stranger.received
