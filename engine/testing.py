"""Helpers for testing workspaces and the engine: a settable clock and `run_task()`.

`run_task()` runs a task through the real orchestrator and executor, with the memory
store and logs in a temporary folder, and returns the final job state and its log
lines. Nothing is mocked; only the storage is kept in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.state import JobState
from engine.logs.model import LogLine


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, value: float) -> None:
        self._now = value


@dataclass(frozen=True)
class TaskRun:
    """The outcome of `run_task`: the final state and every log line of the job."""

    state: JobState
    logs: list[LogLine]

    def step_lines(self, step: str) -> list[str]:
        return [line.line for line in self.logs if line.step == step]


async def run_task(
    workspace: Path,
    task: str,
    input: Mapping[str, Any] | None = None,
    *,
    concurrency: int = 4,
    timeout: float = 60.0,
    environ: Mapping[str, str] | None = None,
) -> TaskRun:
    """Run `task` of the workspace folder `workspace` to its end."""
    from engine.runtime import Runtime, RuntimeOptions

    with tempfile.TemporaryDirectory(prefix="partitur-test-") as tmp:
        name = workspace.name
        runtime = Runtime(RuntimeOptions(
            db_url="memory://", logs_dir=Path(tmp) / "logs",
            artifacts_dir=Path(tmp) / "artifacts", workspaces={name: workspace},
            concurrency=concurrency, environ=environ,
        ))
        await runtime.open()
        try:
            job_id = await runtime.orchestrator.create_job(name, task, input or {})
            state = await runtime.orchestrator.wait(job_id, timeout)
            logs = await runtime.logs.read(job_id)
            return TaskRun(state, logs)
        finally:
            await runtime.close()
