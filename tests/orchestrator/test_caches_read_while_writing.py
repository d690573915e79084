"""Caches filled from the store keep what changed while they were read: a pause is never
undone by a read of the operations stream that began before it and finished after it,
and a task state saved while the task's history loads is kept (the SQLite store commits
some appends on the event loop's thread while earlier reads still wait on its own)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import cast

from composition_support import runtime, workspace

from engine.core import events as ev
from engine.core.state import JobState

WORKFLOW = """
tasks:
  t:
    flow:
      run: { type: shell, interpreter: sh, script: "true" }
"""


async def test_reads_racing_a_pause_keep_it(tmp_path: Path) -> None:
    ws = workspace(tmp_path, WORKFLOW)
    async with runtime(tmp_path, ws, db_url=f"sqlite:///{tmp_path / 'p.db'}") as rt:
        ops = rt.orchestrator.ops
        for i in range(150):
            name = f"w{i}"
            pausing = asyncio.create_task(ops.pause(name, None, by="alice"))
            await asyncio.sleep(0)  # the pause's own read is on its way
            reads = [asyncio.create_task(ops.state(name)) for _ in range(3)]
            await asyncio.gather(pausing, *reads)
            assert ops.known(name).paused is not None, f"pause {i} was lost"
            assert (await ops.state(name)).version == 1


async def test_a_task_state_saved_while_the_history_loads_is_kept(tmp_path: Path) -> None:
    ws = workspace(tmp_path, WORKFLOW)
    async with runtime(tmp_path, ws, db_url=f"sqlite:///{tmp_path / 's.db'}") as rt:
        states = rt.orchestrator.task_states
        job = cast(JobState, SimpleNamespace(job_id="j1", workspace=ws.name, task="t"))
        loading = asyncio.create_task(states.history(ws.name, "t"))
        await asyncio.sleep(0)  # the load reads the store
        states.on_events(job, [ev.TaskStateSaved(ts=5.0, step="run",
                                                 state={"n": 1})])
        history = await loading
        assert [s.state for s in history] == [{"n": 1}]
        assert await states.latest(ws.name, "t") == {"n": 1}
