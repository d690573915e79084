"""Fixtures of the browser tests: the demo back office served on a free port.

The site is workspaces/browser-demo/demo_site.py, served by uvicorn in a thread of the
test process; the browser steps under test reach it over real HTTP.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import uvicorn
from harness import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO_WORKSPACE = ROOT / "workspaces" / "browser-demo"


def _demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_site", DEMO_WORKSPACE / "demo_site.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo_site() -> Iterator[str]:
    """The base URL of the demo site (no trailing slash)."""
    port = free_port()
    config = uvicorn.Config(_demo_module().create_app(), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="demo-site", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "demo site did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def browser_env(chromium_path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point browser steps at the test Chromium; returns its path."""
    monkeypatch.setenv("PARTITUR_BROWSER_EXECUTABLE", chromium_path)
    return chromium_path
