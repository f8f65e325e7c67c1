"""Locust entry point: `locust -f locustfile.py --scenario scenarios/demo.yaml [--host URL]`.

Without --host, the built-in Claude API emulator is started on a free loopback port. From any
folder, with the package installed: `claude-loadtest SCENARIO [locust options]`.
"""

from harness.locustfiles.locustfile import ScenarioUser

__all__ = ["ScenarioUser"]
