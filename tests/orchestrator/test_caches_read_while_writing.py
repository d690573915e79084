"""Caches filled from the store keep what changed while they were read: a pause is never
undone by a read of the operations stream that began before it and finished after it, a
task state saved while the task's history loads is kept, and a job a command reached
before its creator resumed keeps that command's effect (the SQLite store commits
some appends on the event loop's thread while earlier reads still wait on its own)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from composition_support import runtime, workspace

from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.state import JobState, JobStatus
from engine.store.base import JobFilter

SLOW = """
tasks:
  slow:
    flow:
      nap: { type: shell, interpreter: sh, script: "true" }
"""
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


async def test_a_job_reached_before_its_creator_resumed_keeps_what_was_done_to_it(
        tmp_path: Path) -> None:
    """A command may reach a new job (loaded from the store) between the commit of its
    creation and the moment `create_job` resumes, as a remote worker's claim does when
    the creator's task is slow to be scheduled. What it did must not be undone: the
    worker's result is then decided on a state that holds its claim."""
    ws = workspace(tmp_path, SLOW)
    async with runtime(tmp_path, ws, db_url=f"sqlite:///{tmp_path / 'j.db'}",
                       concurrency=0) as rt:  # steps wait for a (remote) worker
        orch, store = rt.orchestrator, rt.store
        real_append = store.append
        committed = asyncio.Event()

        async def slow_answer(stream_id: str, *args: Any, **kwargs: Any) -> Any:
            result = await real_append(stream_id, *args, **kwargs)
            if args[0] == 0:  # the job's creation: committed, answered late
                committed.set()
                await asyncio.sleep(0.3)
            return result

        store.append = slow_answer  # type: ignore[method-assign]
        creating = asyncio.create_task(orch.create_job(ws.name, "slow", {}, source_type="user"))
        await committed.wait()
        (job_id,) = [r.job_id for r in (await store.list_jobs(JobFilter()))[0]]
        # The worker's claim, with its start (as `claim` with `start` records them).
        _, started = await orch.command_then(
            job_id, cmd.Claim(step="nap", attempt=1, worker_id="w1", lease="lease-1"),
            cmd.MarkStarted(step="nap", attempt=1, worker_id="w1"))
        assert started
        assert await creating == job_id
        state = await orch.command(job_id, cmd.Complete(step="nap", attempt=1, output={}))
        assert state.status is JobStatus.COMPLETED
        assert [e.type for e in await store.read(job_id)][-3:] == [
            "StepStarted", "StepCompleted", "JobCompleted"]
