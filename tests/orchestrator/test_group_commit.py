"""Group commit: the commands of one job that arrive in the same turn of the event loop
are decided in turn and appended in one transaction; a refused one fails alone, and a
caller cancelled before the append has nothing written."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from composition_support import runtime, workspace

from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.state import JobState, JobStatus, StepStatus
from engine.errors import InvalidTransition

GATES = """
tasks:
  gates:
    flow:
      a: { type: approval, message: "a?" }
      b: { type: approval, message: "b?" }
      c: { type: approval, message: "c?" }
"""


async def _suspended(rt: object, job: str) -> None:
    orch = rt.orchestrator  # type: ignore[attr-defined]
    for _ in range(200):
        state = await orch.get_state(job)
        if all(state.steps[s].status is StepStatus.SUSPENDED for s in "abc"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"steps not suspended: {state.steps}")


@pytest.mark.parametrize("db", ["sqlite", "memory"])
async def test_commands_of_one_turn_are_one_append(tmp_path: Path, db: str) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}" if db == "sqlite" else "memory://"
    async with runtime(tmp_path, workspace(tmp_path, GATES), db_url=url) as rt:
        orch = rt.orchestrator
        appends: list[list[str]] = []

        def listen(state: JobState, events: Sequence[ev.Event]) -> None:
            if events and state.job_id == job:
                appends.append([type(e).__name__ for e in events])

        job = await orch.create_job("ws", "gates", {})
        await _suspended(rt, job)
        orch.on_events(listen)
        before = (await orch.get_state(job)).version
        states = await asyncio.gather(
            orch.command(job, cmd.Approve(step="a", by="ada")),
            orch.command(job, cmd.Approve(step="b", by="bob")),
            orch.command_then(job, cmd.Approve(step="c", by="cy"),
                              cmd.Approve(step="c", by="again")),
        )
        final = await orch.wait(job, 10)
        records = await rt.store.read(job, after_version=before)
    assert final.status is JobStatus.COMPLETED
    # One append: the three approvals, then what they led to (the job's end).
    assert appends[0][:3] == ["StepApproved"] * 3, appends
    assert "JobCompleted" in appends[0]
    assert [r.data["by"] for r in records if r.type == "StepApproved"] == ["ada", "bob", "cy"]
    # Every caller gets the state after that append; the second approval of c was dropped.
    for state in (states[0], states[1], states[2][0]):
        assert state.version == before + len(records)
    assert states[2][1] is False


async def test_a_refused_command_fails_alone(tmp_path: Path) -> None:
    async with runtime(tmp_path, workspace(tmp_path, GATES)) as rt:
        orch = rt.orchestrator
        job = await orch.create_job("ws", "gates", {})
        await _suspended(rt, job)
        results = await asyncio.gather(
            orch.command(job, cmd.Approve(step="a", by="ada")),
            orch.command(job, cmd.Claim(step="b", attempt=1, worker_id="w", lease="l")),
            orch.command(job, cmd.Reject(step="c", by="bob", reason="no")),
            return_exceptions=True,
        )
        assert isinstance(results[1], InvalidTransition), results[1]
        state = await orch.wait(job, 10)
    assert state.steps["a"].status is StepStatus.COMPLETED
    assert state.steps["b"].status is StepStatus.SUSPENDED or state.terminal
    assert state.steps["c"].status is StepStatus.FAILED
    assert state.steps["c"].error == "rejected: no"


async def test_a_caller_cancelled_before_the_append_has_nothing_written(
    tmp_path: Path,
) -> None:
    async with runtime(tmp_path, workspace(tmp_path, GATES)) as rt:
        orch = rt.orchestrator
        job = await orch.create_job("ws", "gates", {})
        await _suspended(rt, job)
        kept = asyncio.ensure_future(orch.command(job, cmd.Approve(step="a", by="ada")))
        dropped = asyncio.ensure_future(orch.command(job, cmd.Approve(step="b", by="bob")))
        await asyncio.sleep(0)  # both queued: the append happens in the next turn
        dropped.cancel()
        await kept
        with pytest.raises(asyncio.CancelledError):
            await dropped
        state = await orch.get_state(job)
        # The queue drained: a later command is decided and written as usual.
        await orch.command(job, cmd.Approve(step="c", by="cy"))
        after = await orch.get_state(job)
    assert state.steps["a"].status is StepStatus.COMPLETED
    assert state.steps["b"].status is StepStatus.SUSPENDED
    assert after.steps["c"].status is StepStatus.COMPLETED
