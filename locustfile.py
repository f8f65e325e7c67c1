"""Locust entry point: `locust -f locustfile.py --scenario scenarios/demo.yaml [--host URL]`.

Without --host, the built-in Claude API emulator is started on a free loopback port.
"""

from harness import ScenarioUser  # the scenario's requests; the harness's listeners registered with it

__all__ = ["ScenarioUser"]
