"""Child process of test_sqlite_crash.py: appends job events until it is killed.

Usage: python sqlite_crash_child.py DB_PATH. Each job is created, started, and its one
step readied, started and completed, one append per decision, each with its projection
rows; after every acknowledged append it prints `acked <job_id> <version>`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from engine.core import events as ev
from engine.core.plan import Plan, PlanStep
from engine.core.projections import job_row, step_rows
from engine.core.state import JobState, fold
from engine.store.base import Projection
from engine.store.sqlite import SqliteStore

PLAN = Plan(task="t", steps={"only": PlanStep(name="only", action_name="a",
                                             action_type="shell", action={"script": "true"})})


def decisions(job_id: str, t: float) -> list[list[ev.Event]]:
    return [
        [ev.JobCreated(ts=t, job_id=job_id, workspace="w", revision="r", task="t",
                       input={"n": job_id}, plan=PLAN.to_dict())],
        [ev.JobStarted(ts=t), ev.StepReady(ts=t, step="only", input={})],
        [ev.StepStarted(ts=t, step="only", attempt=1, worker_id="w1")],
        [ev.StepCompleted(ts=t, step="only", output={"ok": True}),
         ev.JobCompleted(ts=t, output={"only": {"ok": True}})],
    ]


async def main(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    n = 0
    while True:
        job_id = f"job-{n:06d}"
        state: JobState | None = None
        for batch in decisions(job_id, 1000.0 + n):
            version = state.version if state else 0
            state = fold(batch, state)
            await store.append(job_id, version, batch,
                               projection=Projection(job_row(state), step_rows(state)))
            print(f"acked {job_id} {state.version}", flush=True)
        n += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
