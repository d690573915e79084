"""An in-process engine for W1/W2: `engine.runtime.Runtime` + its orchestrator, the same
path `partitur run` takes (store, log files, live bus, local executor with 8 slots).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import CONCURRENCY
from engine.core.state import StepStatus
from engine.runtime import Runtime, RuntimeOptions


@dataclass(frozen=True)
class RunTiming:
    """One run: submit → told succeeded (`wall_s`), → every step row completed."""

    job_id: str
    wall_s: float
    persisted_s: float
    status: str


@contextlib.asynccontextmanager
async def runtime(root: Path, db_url: str, workspace: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(RuntimeOptions(
        db_url=db_url, logs_dir=root / "logs", artifacts_dir=root / "artifacts",
        workspaces={"bench": workspace}, concurrency=CONCURRENCY, base_dir=root,
    ))
    await rt.open()
    try:
        yield rt
    finally:
        await rt.close()


async def run_once(rt: Runtime, task: str, expected_steps: int | None = None) -> RunTiming:
    """Submit `task` and wait until the submitter is told it finished."""
    start = time.perf_counter()
    job_id = await rt.orchestrator.create_job("bench", task, {}, source_type="user")
    state = await rt.orchestrator.wait(job_id)
    wall = time.perf_counter() - start
    # State is appended with its projection rows in one transaction, so this normally
    # holds at once; it is measured rather than assumed.
    while True:
        steps = await rt.store.get_steps(job_id)
        done = [s for s in steps if s.status == StepStatus.COMPLETED.value]
        if state.terminal and (expected_steps is None or len(done) >= expected_steps):
            break
        if time.perf_counter() - start > 120:
            break
    persisted = time.perf_counter() - start
    return RunTiming(job_id, wall, persisted, state.status.value)
