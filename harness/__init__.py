"""A Locust-based load-testing harness for Claude (Anthropic's models).

One module per concern; docs/architecture.md follows one request through them, file by
file, and the README's "Layout" lists them all. The request path: users -> run -> sampler
-> payload -> transport -> timing, then the run's fan-out to the sinks (stats, records,
points). The emulator (a stand-in Claude API server) is the subpackage `emulator`.
"""

__version__ = "0.3.0"
