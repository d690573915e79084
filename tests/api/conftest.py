"""Shared fixtures of the API tests: one real server per test module, and job helpers.

Every test talks to a real `partitur serve` process over HTTP and WebSocket (no test
client inside the process). The fixture workspaces live in tests/fixtures/api_workspaces/.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from api_helpers import BODY_LIMIT, api_workspaces
from harness import ServerProcess


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the whole test module (fixture workspaces, 64 KiB body limit)."""
    server = ServerProcess(tmp_path_factory.mktemp("api"), workspaces=api_workspaces(),
                           settings={"limits": {"body": BODY_LIMIT},
                                     "workers": {"local": {"concurrency": 4}}})
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def client(api_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.url, timeout=15.0) as c:
        yield c
