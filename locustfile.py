"""Locust entry point: `locust -f locustfile.py --scenario scenarios/demo.yaml [--host URL]`.

Without --host, the built-in Claude API emulator is started on a free loopback port.
"""

from locust import events

from harness import plugin
from harness.users import ClaudeUser

plugin.register(events)

__all__ = ["ClaudeUser"]
