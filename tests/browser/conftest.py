"""Fixtures of the browser tests: the demo back office served on a free port.

The site is workspaces/browser-demo/demo_site.py, served by uvicorn in a thread of the
test process; the browser steps under test reach it over real HTTP.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import uvicorn
from browser_support import DEMO_WORKSPACE, JobRun, RunJob
from harness import free_port

from engine.runners import browser
from engine.runtime import Runtime, RuntimeOptions


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


@pytest.fixture
def run_job(tmp_path: Path, browser_env: str) -> RunJob:
    """`await run_job(workspace, task, input)`: the task run through the real orchestrator.

    Like `engine.testing.run_task`, but the artifacts (and the default profiles folder,
    `tmp_path/profiles`) outlive the run so the test can look at them.
    """
    browser.configure()

    async def run(workspace: Path, task: str, input: Mapping[str, Any] | None = None, *,
                  environ: Mapping[str, str] | None = None, timeout: float = 45) -> JobRun:
        runtime = Runtime(RuntimeOptions(
            db_url="memory://", logs_dir=tmp_path / "logs", artifacts_dir=tmp_path / "artifacts",
            workspaces={workspace.name: workspace}, concurrency=2, environ=environ))
        await runtime.open()
        try:
            job_id = await runtime.orchestrator.create_job(workspace.name, task, input or {})
            state = await runtime.orchestrator.wait(job_id, timeout)
            logs = await runtime.logs.read(job_id)
            row = await runtime.store.get_job(job_id)
            assert row is not None
            steps = list(await runtime.store.get_steps(job_id))
        finally:
            await runtime.close()
        return JobRun(state, logs, row, steps, tmp_path / "artifacts" / job_id)

    return run
