"""Fixtures shared by the whole suite: PostgreSQL databases, Chromium, server processes.

The helpers behind them are in tests/harness.py, importable from every test file as
`import harness` because this file puts tests/ on `sys.path` first thing.

Nothing here touches the exit status: a run that collects no tests still fails (pytest
exits 5), and a missing PostgreSQL or Chromium skips — or fails under
`PARTITUR_REQUIRE_ALL=1` — through `harness.require()`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    CHROMIUM_ENV,
    PG_ENV,
    PgAdmin,
    PgTemplate,
    ServerProcess,
    chromium_executable,
    pg_base_url,
    random_name,
    require,
)

# Fixtures whose users get a marker, so `-m "not postgres"` and friends select them.
_MARKED_FIXTURES = {
    "pg_url": "postgres",
    "pg_template": "postgres",
    "chromium_path": "browser",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _MARKED_FIXTURES.items():
            if fixture in names:
                item.add_marker(getattr(pytest.mark, marker))


@pytest.fixture(scope="session")
def pg_template() -> Iterator[PgTemplate]:
    """Check the test PostgreSQL once, create an empty template database for the session.

    Skips (fails under PARTITUR_REQUIRE_ALL=1) when the server cannot be reached.
    """
    admin = PgAdmin(pg_base_url())
    problem = admin.unreachable_reason()
    require("PostgreSQL", problem is None, f"{problem} (set {PG_ENV} to a reachable server)")
    name = random_name("partitur_tpl")
    url = admin.create(name)
    try:
        yield PgTemplate(admin=admin, name=name, url=url)
    finally:
        admin.drop(name)


@pytest.fixture
def pg_url(pg_template: PgTemplate) -> Iterator[str]:
    """A fresh PostgreSQL database for this test (a copy of the template); dropped after."""
    name = random_name("partitur_test")
    url = pg_template.admin.create(name, template=pg_template.name)
    try:
        yield url
    finally:
        pg_template.admin.drop(name)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """The Chromium executable ($PARTITUR_CHROMIUM or /usr/bin/chromium), required."""
    path = chromium_executable()
    require(
        "Chromium",
        os.path.isfile(path) and os.access(path, os.X_OK),
        f"no executable at {path} (set {CHROMIUM_ENV})",
    )
    return path


@pytest.fixture
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: `make_server(workspaces=…, settings=…, env=…, start=True)` → ServerProcess.

    Each server gets its own folder (config, SQLite file, logs, server.log) and a free
    port; every server made is stopped at teardown, killed if it will not stop.
    """
    made: list[ServerProcess] = []

    def factory(*, start: bool = True, **kwargs: Any) -> ServerProcess:
        proc = ServerProcess(tmp_path_factory.mktemp("server"), **kwargs)
        made.append(proc)
        return proc.start() if start else proc

    yield factory
    for proc in made:
        proc.close()


@pytest.fixture
def server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A running server with no workspaces and the default settings of `ServerProcess`."""
    return make_server()
