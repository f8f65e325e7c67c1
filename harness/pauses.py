"""Keeps the load generator's own pauses out of the timings.

Any pause of the process late-stamps every response byte that arrives meanwhile. These
were measured in runs against the emulator (gevent's blocking monitor named the culprits)
and are taken before users start:
- a full garbage collection over everything Locust, the SDK and the harness import:
  about 40 ms;
- Locust's `runner.stop()` calls `inspect.stack()`, which maps every loaded module to its
  file and reads the source of each frame: 39 ms cold (hundreds of ms once the anthropic
  SDK is loaded), about 1 ms warm, stalling the requests still in flight at the stop.
Import-time costs (the anthropic SDK takes seconds) are avoided by building transports
before the run starts, not in a user's on_start.
"""

from __future__ import annotations

import gc
import inspect


def quiet_gc() -> None:
    """Freeze start-up objects out of collections and make collections rare.

    The per-request garbage is small and mostly acyclic, so reference counting frees it.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def warm_inspect() -> None:
    """Fill inspect's module-to-file map and linecache, as Locust's stop path will need."""
    inspect.stack()


def settle() -> None:
    warm_inspect()
    quiet_gc()
