"""Fixtures of the cloud API tests: one real server (auth off) per test module."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from harness import ServerProcess


@pytest.fixture(scope="module")
def v1_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("v1"),
                           settings={"callbacks": {"allow_private": True},
                                     "secrets_key": "test-secrets-key",
                                     "limits": {"body": 256 * 1024}})
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def v1(v1_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=v1_server.url, timeout=15.0) as client:
        yield client
