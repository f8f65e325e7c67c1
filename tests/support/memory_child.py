"""The whole harness in one process, as `locust` runs it (gevent-patched, Locust's local runner,
the plugin, the users, the guard with an abort rule, the web UI's live figures), against the
emulator, for tests/test_memory.py:

    python -m tests.support.memory_child URL SCENARIO OUTPUT_DIR N CHECKPOINTS
    python -m tests.support.memory_child --worker MASTER_PORT N CHECKPOINTS

or as a worker of a real master on loopback (Locust's worker runner: the run and the users come
from the master, a report of the stats goes to it every few seconds).

After a warm-up of N requests, and in a local process of WARMUP_S seconds (the live figures'
time buckets fill up by then; a worker keeps none), the garbage collector is switched off; then at each of
CHECKPOINTS checkpoints, N requests apart (counted, not timed), it prints one JSON line: the
requests since the last one, the objects in reference cycles that became garbage meanwhile
(found by one full collection, by type), and the objects the collector tracks, by type.
"""

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import gevent  # noqa: E402
import gevent.lock  # noqa: E402
from locust import events  # noqa: E402
from locust.argument_parser import get_parser  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.runners import Runner  # noqa: E402

import locustfile  # noqa: E402,F401  (registers the plugin)
from harness import live, locust_env, run  # noqa: E402
from harness.live import Snapshots  # noqa: E402
from harness.users import ScenarioUser  # noqa: E402
from harness.worker_session import WorkerSession  # noqa: E402

USERS = 40
WINDOW_ENV = "MEMORY_CHILD_WINDOW_S"
# the live figures' window (tests/test_memory.py shortens the web UI's 30 s: what is checked is
# that nothing accumulates once the window's buckets have filled up, which they do sooner)
WINDOW_S = int(os.environ.get(WINDOW_ENV, run.LIVE_WINDOW_S))
run.LIVE_WINDOW_S = live.WINDOW_S = WINDOW_S
WARMUP_S = WINDOW_S + 10


def local(url: str, scenario: str, output_dir: str) -> tuple[Environment, Runner]:
    options = get_parser().parse_args(
        [
            "-f",
            "locustfile.py",
            "--headless",
            "--scenario",
            scenario,
            "--host",
            url,
            "-u",
            str(USERS),
            "-r",
            str(USERS),
            "--output-dir",
            output_dir,
        ]
    )
    environment = Environment(user_classes=[ScenarioUser], events=events, parsed_options=options, host=url)
    runner = environment.create_local_runner()
    events.init.fire(environment=environment, runner=runner, web_ui=None)
    runner.start(USERS, spawn_rate=USERS)
    return environment, runner


def worker(master_port: int) -> tuple[Environment, Runner]:
    options = get_parser().parse_args(["-f", "locustfile.py", "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)])
    environment = Environment(user_classes=[ScenarioUser], events=events, parsed_options=options)
    runner = environment.create_worker_runner("127.0.0.1", master_port)
    events.init.fire(environment=environment, runner=runner, web_ui=None)
    return environment, runner


def main() -> None:
    if sys.argv[1] == "--worker":
        environment, runner = worker(int(sys.argv[2]))
        n, checkpoints = int(sys.argv[3]), int(sys.argv[4])
    else:
        environment, runner = local(*sys.argv[1:4])
        n, checkpoints = int(sys.argv[4]), int(sys.argv[5])
    session = locust_env.session(environment)
    quiet = gevent.lock.Semaphore()
    if not isinstance(session, WorkerSession):
        gevent.spawn(poll, Snapshots(session), quiet)

    def wait_for(count: int) -> None:
        while session.run is None or session.run.ledger.recorded < count:
            gevent.sleep(0.05)

    started = time.monotonic()
    wait_for(n)
    if not isinstance(session, WorkerSession):
        gevent.sleep(max(0.0, WARMUP_S - (time.monotonic() - started)))
    gc.disable()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    for _ in range(checkpoints):
        start = session.run.ledger.recorded
        wait_for(start + n)
        quiet.acquire()  # not in the middle of building live figures
        gc.collect()
        garbage = Counter(type(o).__name__ for o in gc.garbage)
        gc.garbage.clear()
        tracked = Counter(type(o).__name__ for o in gc.get_objects())
        in_flight = session.run.in_flight  # (each request in flight holds its reader, timer, record...)
        print(
            json.dumps({"requests": session.run.ledger.recorded - start, "garbage": garbage, "tracked": tracked, "in_flight": in_flight}),
            flush=True,
        )
        quiet.release()
    runner.quit()


def poll(live: Snapshots, quiet: gevent.lock.Semaphore) -> None:
    """The web UI's Claude tab asks for live figures every second or so."""
    while True:
        with quiet:
            live.build()
        gevent.sleep(0.5)


if __name__ == "__main__":
    main()
