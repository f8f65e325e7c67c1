"""Both transports in a process of their own, monkey-patched by gevent as inside Locust (the SDK's
sockets then yield to gevent, so the harness's deadlines hold for it too), for
tests/test_transport.py. A pytest process must not be patched (tests/conftest.py).

    python -m tests.support.transport_child      # prints "ready"; then one JSON command per stdin line:
    {"url": ..., "transport": "fast"|"sdk", "body": {...}, "stream": bool, "timeouts": {...}, "platform": {...}}
    -> one JSON line per command: the TimingRecord's fields
(`platform`, optional: harness/platforms.py's Platform, e.g. Bedrock's, with test AWS credentials.)
"""

from gevent import monkey

monkey.patch_all()

import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from gevent.socket import wait_read  # noqa: E402

from harness.platforms import Platform  # noqa: E402
from harness.scenario import Timeouts  # noqa: E402
from harness.timing import TimingRecord  # noqa: E402
from harness.transport import FastTransport, PreparedRequest, SdkTransport, Target  # noqa: E402

API_KEY = "test-key"
VERSION = "2023-06-01"
AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIA" + "REPLAYTEST",
    "AWS_SECRET_ACCESS_KEY": "replay-" + "secret",
}  # Bedrock's requests are signed


def main() -> None:
    made: dict[tuple[str, str, float, str], Any] = {}
    print("ready", flush=True)
    while True:
        wait_read(sys.stdin.fileno())  # the event loop runs while the test thinks, as inside Locust it always does
        line = sys.stdin.readline()
        if not line:
            break
        command = json.loads(line)
        timeouts = Timeouts(**command["timeouts"])
        platform = Platform(**command.get("platform", {}))
        key = (command["url"], command["transport"], timeouts.connect_s, platform.name)
        if key not in made:
            if not platform.is_api:
                os.environ.update(AWS_CREDENTIALS)
            headers = {"anthropic-version": VERSION, "content-type": "application/json"}
            target = Target(command["url"], api_key=API_KEY, headers=headers, platform=platform)
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
