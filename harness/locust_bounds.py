"""Locust's own state stays bounded in runs that last hours.

Every Locust stats entry (one per request name and type, and the total) counts requests and
failures per wall-clock second in `num_reqs_per_sec` / `num_fail_per_sec`, and never drops a
second on a local or master process (a worker's entries are replaced at every report): one
dict item per entry per second, about 1.5 MB per hour on the demo scenario. Locust reads
them only for `current_rps` and `current_fail_per_sec`, over the last 12 seconds; here the
seconds older than `KEEP_S` are dropped every `EVERY_S` seconds, on local and master processes.

(`stats.history`, one row per 5 s for the charts of Locust's HTML report, is kept whole: the
report needs all of it; it grows by about 0.7 MB per hour.)

A worker's time stays its streams': Locust's worker builds its whole argument parser again
for each option of each spawn message (`default_args_dict`, once per key of the message's
options: 91 parses, about 0.1 s with the event loop stalled, several times that on a busy
machine). Its result does not change within a process (Locust's own options, before any
plugin's): `remember_default_args` computes it once.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import gevent
from locust import argument_parser

if TYPE_CHECKING:
    from locust.env import Environment

KEEP_S = 60
EVERY_S = 10.0


def trim_per_second_counts(stats: Any, now_s: float) -> int:
    """Drop the per-second counts older than `KEEP_S` from every entry of a Locust
    `RequestStats`; returns how many were dropped."""
    oldest = int(now_s) - KEEP_S
    dropped = 0
    for entry in [stats.total, *stats.entries.values()]:
        for counts in (entry.num_reqs_per_sec, entry.num_fail_per_sec):
            old = [second for second in counts if second < oldest]
            for second in old:
                del counts[second]
            dropped += len(old)
    return dropped


def keep_bounded(environment: Environment) -> gevent.Greenlet:
    """Trim the environment's stats every `EVERY_S` seconds until the process ends."""

    def loop() -> None:
        while True:
            gevent.sleep(EVERY_S)
            trim_per_second_counts(environment.stats, time.time())

    return gevent.spawn(loop)


def remember_default_args() -> None:
    """Locust's default options computed once per process, each caller given its own copy."""
    if getattr(argument_parser.default_args_dict, "remembered", False):
        return
    defaults = functools.cache(argument_parser.default_args_dict)

    def default_args_dict() -> dict[str, Any]:
        return dict(defaults())

    default_args_dict.remembered = True  # type: ignore[attr-defined]
    argument_parser.default_args_dict = default_args_dict
