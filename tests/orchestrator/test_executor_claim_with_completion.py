"""A completed step's slot goes to the next waiting step of the same job, whose claim is
written in the completion's append; the events and their order stay those of a claim
of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from composition_support import runtime, workspace

from engine.core.state import JobStatus
from engine.priority import PrioritySlots

STEP = """
      s{n}:
        type: shell
        interpreter: sh
        script: echo step {n}
"""
YAML = "tasks:\n  fan:\n    flow:" + "".join(STEP.format(n=n) for n in range(6))


@pytest.mark.parametrize("db", ["memory", "sqlite"])
async def test_each_next_step_is_claimed_with_the_previous_completion(
    tmp_path: Path, db: str
) -> None:
    ws = workspace(tmp_path, YAML)
    db_url = "memory://" if db == "memory" else f"sqlite:///{tmp_path / 'p.db'}"
    async with runtime(tmp_path, ws, db_url=db_url, concurrency=1) as rt:
        job = await rt.orchestrator.create_job("ws", "fan", {})
        state = await rt.orchestrator.wait(job, 60)
        assert state.status is JobStatus.COMPLETED, state.error
        records = await rt.store.read(job)
        lines = await rt.logs.read(job)

    steps = [f"s{n}" for n in range(6)]
    for name in steps:
        kinds = [r.type for r in records if r.data.get("step") == name]
        # Claimed once, before its process started, completed once.
        assert [k for k in kinds if k in ("StepClaimed", "StepStarted", "StepCompleted")] == [
            "StepClaimed", "StepStarted", "StepCompleted"], (name, kinds)
        assert [ln.line for ln in lines if ln.step == name] == [f"step {name[1:]}"]
    # One slot: every step after the first is claimed in the append that completed the
    # step before it (consecutive versions, one timestamp).
    by_version = {r.version: r for r in records}
    paired = 0
    for r in records:
        if r.type != "StepClaimed":
            continue
        before = by_version.get(r.version - 1)
        if before is not None and before.type == "StepCompleted" and before.ts == r.ts:
            paired += 1
    assert paired == len(steps) - 1


async def test_hand_over_gives_the_slot_to_the_waiter_release_would_pick() -> None:
    slots = PrioritySlots(1)
    ticket = await slots.acquire(3, "a")
    low = asyncio.ensure_future(slots.acquire(5, "b", tag="low"))
    high = asyncio.ensure_future(slots.acquire(1, "c", tag="high"))
    for _ in range(3):
        await asyncio.sleep(0)
    waiter = slots.next_waiter()
    assert waiter is not None and waiter.tag == "high"
    assert slots.waiting == 2  # looking did not take it
    assert slots.hand_over(ticket, waiter)
    assert not slots.hand_over(ticket, waiter)  # the ticket is no longer held
    got = await asyncio.wait_for(high, 1)
    assert slots.holders() == ["c"] and slots.waiting == 1
    slots.release(ticket)  # released after handing over: nothing happens
    assert slots.holders() == ["c"]
    slots.release(got)
    slots.release(await asyncio.wait_for(low, 1))
    assert slots.in_use == 0 and slots.next_waiter() is None


async def test_starts_of_one_turn_are_written_together_and_none_is_lost(
    tmp_path: Path,
) -> None:
    yaml = "tasks:\n  fan:\n    flow:" + "".join(STEP.format(n=n) for n in range(12))
    ws = workspace(tmp_path, yaml)
    async with runtime(tmp_path, ws, db_url=f"sqlite:///{tmp_path / 'p.db'}",
                       concurrency=4) as rt:
        job = await rt.orchestrator.create_job("ws", "fan", {})
        state = await rt.orchestrator.wait(job, 60)
        assert state.status is JobStatus.COMPLETED, state.error
        records = await rt.store.read(job)
    for n in range(12):
        mine = [r for r in records if r.data.get("step") == f"s{n}"
                and r.type in ("StepClaimed", "StepStarted", "StepCompleted")]
        assert [r.type for r in mine] == ["StepClaimed", "StepStarted", "StepCompleted"]
        assert mine[1].data["pid"], mine[1]
    assert [r.version for r in records] == list(range(1, len(records) + 1))


CHAIN = "tasks:\n  chain:\n    flow:" + "".join(
    STEP.format(n=n) + (f"        depends_on: [s{n - 1}]\n" if n else "") for n in range(4))


@pytest.mark.parametrize("db", ["memory", "sqlite"])
async def test_the_next_step_of_a_chain_is_claimed_with_the_end_before_it(
    tmp_path: Path, db: str
) -> None:
    ws = workspace(tmp_path, CHAIN)
    db_url = "memory://" if db == "memory" else f"sqlite:///{tmp_path / 'p.db'}"
    appends: list[list[tuple[str, str | None]]] = []
    async with runtime(tmp_path, ws, db_url=db_url, concurrency=1) as rt:
        rt.orchestrator.on_events(lambda state, events: appends.append(
            [(type(e).__name__, getattr(e, "step", None)) for e in events]))
        job = await rt.orchestrator.create_job("ws", "chain", {})
        state = await rt.orchestrator.wait(job, 60)
        records = await rt.store.read(job)
        lines = await rt.logs.read(job)
    assert state.status is JobStatus.COMPLETED, state.error
    for n in range(1, 4):
        # The end of s(n-1), what it makes ready and the claim of s(n): one append.
        assert any(("StepCompleted", f"s{n - 1}") in a and ("StepReady", f"s{n}") in a
                   and ("StepClaimed", f"s{n}") in a for a in appends), appends
    for n in range(4):
        kinds = [r.type for r in records if r.data.get("step") == f"s{n}"]
        assert kinds == ["StepReady", "StepClaimed", "StepStarted", "StepCompleted"], kinds
        assert [ln.line for ln in lines if ln.step == f"s{n}"] == [f"step {n}"]
