"""A Locust-based load-testing harness for Claude (Anthropic's models).

One module per concern; docs/architecture.md follows one request through them, file by
file, and the README's "Layout" lists them all. The request path: users -> run -> sampler
-> payload -> transport -> timing, then the run's fan-out to the sinks (stats, records,
points). The emulator (a stand-in Claude API server) is the subpackage `emulator`.
"""

__version__ = "0.3.0"

__all__ = ["ClaudeUser", "ScenarioUser"]


def __getattr__(name: str) -> object:
    """`from harness import ClaudeUser` (or ScenarioUser) in a locustfile: the user class, with the
    harness's listeners on Locust's events (imported only then: Locust patches the interpreter)."""
    if name not in __all__:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    from locust import events

    from harness import plugin, users

    plugin.register(events)
    return getattr(users, name)
