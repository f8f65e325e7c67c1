"""A Locust-based load-testing harness for Claude (Anthropic's models).

Modules, one concern each: scenario (YAML schema), payload (request bodies), timing
(the per-request timing record and the SSE timing parser), transport (HTTP to the
Messages API), users (Locust user classes), stats (HDR histograms and the summary),
emulator (a stand-in Claude API server).
"""

__version__ = "0.3.0"
