"""Session-wide guards and shared fixtures of the test suite.

The interpreter is gevent-patched here, before any test module is collected: Locust patches it
when it is first imported, and test modules import it at collection, so without this a class
defined before that import (tests/support's `Background` thread) would be a native thread in
one run order and a greenlet in another, waiting on gevent primitives from a foreign thread.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import shutil  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

BROWSER_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(autouse=True)
def no_monkey_patching_mid_session() -> Iterator[None]:
    """Importing Locust monkey-patches the interpreter (gevent). Done by a test at run time, it
    changes `threading` under the feet of every later test that uses threads (they then hang or
    return early): a test that needs Locust in process imports it at collection or runs a child."""
    before = monkey.is_module_patched("threading")
    yield
    assert monkey.is_module_patched("threading") == before, "this test monkey-patched the interpreter (imported Locust?)"


@pytest.fixture
def browser() -> Iterator[Any]:
    """A real headless Chromium (Debian's, driven by Playwright)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "chromium is not installed: `apt-get install -y chromium` (make test does it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()
