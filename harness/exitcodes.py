"""Process exit codes, documented in the README. Locust's own `process_exit_code` carries them."""

OK = 0  # the run completed and every check passed
FAILED = 1  # an SLO was breached (or, without SLOs, some requests failed)
USAGE = 2  # usage or configuration error: bad scenario, missing API key, bad option
COST_GUARD = 3  # stopped by a guard: the budget or --max-requests reached, or the disk nearly full
UNRELIABLE = 4  # --fail-on-unreliable: the load generator was saturated, timings are suspect
CRASHED = 5  # the harness or Locust raised an unhandled error (a bug: see the log); the figures may be incomplete
MASTER_LOST = 6  # a worker whose master stopped answering: it stopped its users (its records are kept)
