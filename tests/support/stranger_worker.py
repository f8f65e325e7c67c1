"""A process that connects to a master's worker port as a Locust worker would, and writes down
every message the master sends it (tests/test_security.py).

    python -m tests.support.stranger_worker MODE MASTER_HOST MASTER_PORT SECONDS OUT

- `stranger`: knows no secret. Sends Locust's client_ready, heartbeats, a forged stats report
  (an entry named "forged" with 1,000 requests), then the harness's join and a made-up proof,
  and listens for SECONDS.
- `garbage`: sends bytes that are no Locust message, and a locustfile request without data.
- `insider`: proves the secret in CLAUDE_LOADTEST_WORKER_SECRET, as a harness worker does;
  once it has been sent a spawn message it quits (Locust hands its users to the other workers).

OUT gets one JSON line per message received: {"type": ..., "data": ...} (repr where the data is
not JSON). Runs in its own process: Locust's modules monkey-patch the interpreter.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any

from locust.rpc.protocol import Message
from locust.rpc.zmqrpc import Client
from locust.stats import RequestStats, StatsEntry

from harness.workerauth import CHALLENGE_MESSAGE, JOIN_MESSAGE, PROOF_MESSAGE, new_nonce, proof


def forged_report() -> dict[str, Any]:
    stats = RequestStats()
    entry = StatsEntry(stats, "forged", "STREAM")
    for _ in range(1000):
        entry.log(5, 10)
    total = StatsEntry(stats, "Aggregated", None)
    total.extend(entry)
    return {"stats": [entry.serialize()], "stats_total": total.serialize(), "errors": {}, "user_count": 1, "user_classes_count": {}}


def main(mode: str, host: str, port: int, seconds: float, out_path: str) -> None:
    client_id = f"stranger_{uuid.uuid4().hex}"
    client = Client(host, port, client_id)
    nonce = new_nonce()
    secret = os.environ.get("CLAUDE_LOADTEST_WORKER_SECRET", "").encode()

    def send(msg_type: str, data: Any = None) -> None:
        client.send(Message(msg_type, data, client_id))

    if mode == "garbage":  # what would end Locust's listener: bytes that are no message, a locustfile request without data
        client.socket.send(b"\x01", 0)
        send("locustfile", None)
        time.sleep(0.5)
        client.close(linger=500)
        open(out_path, "w").close()  # it listens to nothing
        return
    send("client_ready", "2.47.0")
    if mode == "stranger":
        send("heartbeat", {"state": "ready", "current_cpu_usage": 1.0, "current_memory_usage": 1})
        send("stats", forged_report())
    send(JOIN_MESSAGE, {"nonce": nonce})
    deadline = time.monotonic() + seconds
    with open(out_path, "w", encoding="utf-8") as out:
        while time.monotonic() < deadline:
            if not client.socket.poll(200):
                if mode == "stranger":
                    send("heartbeat", {"state": "ready", "current_cpu_usage": 1.0, "current_memory_usage": 1})
                continue
            msg = client.recv()
            try:
                line = json.dumps({"type": msg.type, "data": msg.data})
            except TypeError:
                line = json.dumps({"type": msg.type, "data": repr(msg.data)})
            out.write(line + "\n")
            out.flush()
            if msg.type == CHALLENGE_MESSAGE:
                issued = msg.data["nonce"]
                answer = "0" * 64 if mode == "stranger" else proof(secret, "worker", client_id, issued)
                send(PROOF_MESSAGE, {"nonce": issued, "proof": answer})
                if mode == "stranger":
                    send("stats", forged_report())
            elif msg.type == "spawn" and mode == "insider":
                send("quit")
                break
    client.close(linger=500)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
