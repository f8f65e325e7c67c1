"""Locust's own result outputs hold every request of a run exactly once.

This module owns the final content of what Locust itself writes or serves about a run, on a
local or master process (workers write none of it):
- the `--csv PREFIX` files: `PREFIX_stats.csv`, `PREFIX_stats_history.csv` (its last rows),
  `PREFIX_failures.csv` and `PREFIX_exceptions.csv`, and so the web UI's
  `/stats/requests_full_history/csv` download, which serves the history file from disk;
- `--json` (stdout) and `--json-file`.
(`--html`, the web UI's `/stats/requests/csv`, `/stats/failures/csv` and HTML report are
rendered from Locust's live stats when asked for: they are right once the run's stats are,
which the harness's drain ensures; nothing to do here.)

Two Locust defects are worked around (Locust 2.47):
1. The CSV files are rewritten once a second by a background greenlet
   (`StatsCSVFileWriter.stats_writer`) and, at exit, only closed: requests that end after
   its last tick (those the `--stop-timeout` drain lets finish) never reach them (Locust
   #1806, #2299); the history file is also flushed only every 5 s, so the web UI's download
   lags. Here the files are rewritten and flushed once more when the test stops
   (`test_stop`: the stats are final, the master has drained its workers) and when the
   process quits (`quit`: fired after Locust's own last stop, before the files are closed).
2. `RequestStats.serialize_stats()`, which `--json` and `--json-file` call at shutdown, is
   the worker's report call: it *resets* every entry it serialises (`get_stripped_report`).
   So with both options the JSON file is `[]`, and any CSV write after the JSON (a tick
   during a slow `quit` listener, or the final rewrite above) holds zeros. On a local or
   master process nothing needs that reset, so there it serialises without resetting.

Locust private API used (all of it here, checked by tests/test_locust_outputs.py):
- in a headless run the CSV writer is a local variable of `locust.main.main`; it is found
  among live objects (`gc`) by its class `locust.stats.StatsCSVFileWriter`. With the web
  UI it is the public `environment.web_ui.stats_csv_writer`;
- `StatsCSVFileWriter` attributes: the four `*_csv_filehandle`s and their `*_csv_writer`s,
  `stats_history_csv_columns`, and the method `_stats_history_data_rows(writer, now)`;
- the instance attribute `serialize_stats` of `environment.stats` is replaced.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import TYPE_CHECKING, Any

from locust.stats import RequestStats, StatsCSVFileWriter

if TYPE_CHECKING:
    from locust.env import Environment

logger = logging.getLogger("harness.locust_outputs")


def register(environment: Environment) -> None:
    """Called from the plugin's `init` listener, on every process; acts on a local or master."""
    options = environment.parsed_options
    if options is None or getattr(options, "worker", False):
        return  # a worker's serialize_stats must keep resetting: its reports are deltas
    keep_entries_when_serialized(environment.stats)
    if not getattr(options, "csv_prefix", None):
        return
    writer = find_csv_writer(environment)
    if writer is None:
        logger.warning("--csv: Locust's CSV writer was not found; its files may miss the last requests")
        return
    environment.events.test_stop.add_listener(lambda **_: write_final_csv(writer))
    environment.events.quit.add_listener(lambda **_: write_final_csv(writer))


def keep_entries_when_serialized(stats: RequestStats) -> None:
    """`serialize_stats` without Locust's reset of every entry (defect 2 above). The output is
    the same list Locust's own method returns: every entry with requests or failures."""

    def serialize_stats() -> list[Any]:
        return [e.serialize() for e in stats.entries.values() if not (e.num_requests == 0 and e.num_failures == 0)]

    stats.serialize_stats = serialize_stats  # type: ignore[method-assign]  # Locust private behaviour


def find_csv_writer(environment: Environment) -> StatsCSVFileWriter | None:
    """Locust's `--csv` writer of this environment: the web UI's, else the one `locust.main`
    keeps in a local variable (found among live objects: private, see the module docstring)."""
    web_ui = getattr(environment, "web_ui", None)
    writer = getattr(web_ui, "stats_csv_writer", None)
    if isinstance(writer, StatsCSVFileWriter):
        return writer
    # issubclass(type(o)), not isinstance(o): isinstance would ask every object for its
    # __class__, and a proxy object (werkzeug's, Flask's) may answer with an exception
    found = [o for o in gc.get_objects() if issubclass(type(o), StatsCSVFileWriter) and o.environment is environment]
    return found[0] if len(found) == 1 else None


def write_final_csv(writer: StatsCSVFileWriter) -> None:
    """Rewrite Locust's CSV files from its current stats, as its own periodic tick does, and
    flush them: the stats table, failures and exceptions are written whole (header at the
    start, as Locust lays them out), the history gets its rows for now appended."""
    if writer.requests_csv_filehandle.closed:
        return
    whole = (
        (writer.requests_csv_filehandle, writer.requests_csv_writer, writer.requests_csv),
        (writer.failures_csv_filehandle, writer.failures_csv_writer, writer.failures_csv),
        (writer.exceptions_csv_filehandle, writer.exceptions_csv_writer, writer.exceptions_csv),
    )
    for handle, csv_writer, write in whole:
        handle.seek(0)
        write(csv_writer)  # the header row, then every data row
        handle.truncate()
        handle.flush()
    history = writer.stats_history_csv_filehandle
    if history.tell() == 0:  # Locust's writer has not run yet: the header comes first
        writer.stats_history_csv_writer.writerow(writer.stats_history_csv_columns)
    writer._stats_history_data_rows(writer.stats_history_csv_writer, time.time())  # Locust private
    history.flush()
