"""Both transports in a process of their own, monkey-patched by gevent as inside Locust (the SDK's
sockets then yield to gevent, so the harness's deadlines hold for it too), for
tests/test_transport.py. A pytest process must not be patched (tests/conftest.py).

    python -m tests.support.transport_child      # prints "ready"; then one JSON command per stdin line:
    {"url": ..., "transport": "fast"|"sdk", "body": {...}, "stream": bool, "timeouts": {...}}
    -> one JSON line per command: the TimingRecord's fields
"""

from gevent import monkey

monkey.patch_all()

import dataclasses  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from gevent.socket import wait_read  # noqa: E402

from harness.scenario import Timeouts  # noqa: E402
from harness.timing import TimingRecord  # noqa: E402
from harness.transport import FastTransport, PreparedRequest, SdkTransport, Target  # noqa: E402

API_KEY = "test-key"
VERSION = "2023-06-01"


def main() -> None:
    made: dict[tuple[str, str, float], Any] = {}
    print("ready", flush=True)
    while True:
        wait_read(sys.stdin.fileno())  # the event loop runs while the test thinks, as inside Locust it always does
        line = sys.stdin.readline()
        if not line:
            break
        command = json.loads(line)
        timeouts = Timeouts(**command["timeouts"])
        key = (command["url"], command["transport"], timeouts.connect_s)
        if key not in made:
            target = Target(command["url"], api_key=API_KEY, headers={"anthropic-version": VERSION, "content-type": "application/json"})
            made[key] = (
                FastTransport(target, timeouts.connect_s) if command["transport"] == "fast" else SdkTransport(target, 4, timeouts.connect_s)
            )
        body = command["body"]
        request = PreparedRequest(body=body, data=json.dumps(body).encode(), stream=command["stream"], timeouts=timeouts)
        record = TimingRecord(model=body["model"], prompt="replay", mode="stream" if command["stream"] else "blocking")
        made[key].send(record, request)
        print(json.dumps(dataclasses.asdict(record)), flush=True)
    for transport in made.values():
        transport.close()


if __name__ == "__main__":
    main()
