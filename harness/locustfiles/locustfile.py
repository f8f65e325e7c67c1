"""The packaged locustfile (what `claude-loadtest` runs): the scenario's requests.

`locust -f locustfile.py` in a clone runs the same (the top-level locustfile imports this).
"""

from harness import ScenarioUser  # the harness's listeners are registered with it

__all__ = ["ScenarioUser"]
