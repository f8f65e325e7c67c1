"""Session-wide guards for the test suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gevent import monkey


@pytest.fixture(autouse=True)
def no_monkey_patching_mid_session() -> Iterator[None]:
    """Importing Locust monkey-patches the interpreter (gevent). Done by a test at run time, it
    changes `threading` under the feet of every later test that uses threads (they then hang or
    return early): a test that needs Locust in process imports it at collection or runs a child."""
    before = monkey.is_module_patched("threading")
    yield
    assert monkey.is_module_patched("threading") == before, "this test monkey-patched the interpreter (imported Locust?)"
