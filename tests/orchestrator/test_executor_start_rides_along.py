"""A step's `StepStarted` is written with its job's next append, or on its own
`START_DELAY` after the process started: never lost, never after the step's end, and
stamped with the time the process started (not later than the append it rides in)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from composition_support import runtime, workspace

from engine import executor
from engine.core import commands as cmd
from engine.core.state import JobStatus

CHAIN = """
tasks:
  chain:
    flow:
      s0: { type: shell, interpreter: sh, script: "sleep 0.05; echo zero" }
      s1: { type: shell, interpreter: sh, script: "sleep 0.05; echo one", depends_on: [s0] }
      s2: { type: shell, interpreter: sh, script: "sleep 0.05; echo two", depends_on: [s1] }
"""
LONG = """
tasks:
  long:
    flow:
      work: { type: shell, interpreter: sh, script: "echo ready; sleep 30" }
"""


async def test_each_start_rides_with_its_step_end_and_keeps_the_start_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor, "START_DELAY", 60.0)  # only an append carries a start
    ws = workspace(tmp_path, CHAIN)
    async with runtime(tmp_path, ws, db_url=f"sqlite:///{tmp_path / 'p.db'}",
                       concurrency=1) as rt:
        job = await rt.orchestrator.create_job("ws", "chain", {})
        state = await rt.orchestrator.wait(job, 60)
        assert state.status is JobStatus.COMPLETED, state.error
        records = await rt.store.read(job)
        rows = {s.step_name: s for s in await rt.store.get_steps(job)}
    assert [r.version for r in records] == list(range(1, len(records) + 1))
    for name in ("s0", "s1", "s2"):
        mine = {r.type: r for r in records if r.data.get("step") == name
                and r.type in ("StepClaimed", "StepStarted", "StepCompleted")}
        claimed, started, completed = (mine["StepClaimed"], mine["StepStarted"],
                                       mine["StepCompleted"])
        assert started.data["pid"]
        # Written in the append of the step's end, just ahead of it...
        assert started.version == completed.version - 1
        # ...but stamped when the process started: the step ran 50 ms in between.
        assert claimed.ts <= started.ts < completed.ts - 0.04, (name, started, completed)
        assert rows[name].started_at == started.ts


async def test_a_long_step_gets_its_start_written_on_its_own(tmp_path: Path) -> None:
    ws = workspace(tmp_path, LONG)
    async with runtime(tmp_path, ws, db_url=f"sqlite:///{tmp_path / 'p.db'}") as rt:
        job = await rt.orchestrator.create_job("ws", "long", {})
        started = None
        for _ in range(200):
            started = next((r for r in await rt.store.read(job) if r.type == "StepStarted"),
                           None)
            if started is not None:
                break
            await asyncio.sleep(0.05)
        assert started is not None, "StepStarted not written while the step runs"
        assert started.data["pid"]
        assert not any(r.type == "StepCompleted" for r in await rt.store.read(job))
        await rt.orchestrator.command(job, cmd.Cancel(by=None, reason="done looking"))
        state = await rt.orchestrator.wait(job, 30)
        assert state.status is JobStatus.CANCELLED


async def test_a_cancel_before_the_start_is_written_keeps_the_start_and_ends_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executor, "START_DELAY", 60.0)  # the start stays pending
    ws = workspace(tmp_path, LONG)
    async with runtime(tmp_path, ws, db_url=f"sqlite:///{tmp_path / 'p.db'}") as rt:
        job = await rt.orchestrator.create_job("ws", "long", {})
        for _ in range(200):
            if any(ln.line == "ready" for ln in await rt.logs.read(job)):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the step never printed its first line")
        assert not any(r.type == "StepStarted" for r in await rt.store.read(job))
        await rt.orchestrator.command(job, cmd.Cancel(by=None, reason="stop"))
        state = await rt.orchestrator.wait(job, 30)
        assert state.status is JobStatus.CANCELLED
        records = await rt.store.read(job)
        types = [r.type for r in records if r.data.get("step") == "work"]
        assert types.index("StepStarted") < types.index("StepCancelled"), types
        pid = next(r.data["pid"] for r in records if r.type == "StepStarted")
        for _ in range(100):  # the step's process group goes away (SIGTERM, then SIGKILL)
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"process group {pid} still there")
