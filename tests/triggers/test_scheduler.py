"""The scheduler on a FakeClock: slots fire once, misfire and concurrency policies."""

from __future__ import annotations

import asyncio
from pathlib import Path

from trigger_support import make_runtime, write_workspace

from engine.store.base import JobFilter
from engine.testing import FakeClock

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a minute boundary

WORKSPACE = """
tasks:
  quick:
    input:
      who: { type: string, default: nobody }
    flow:
      hi:
        type: shell
        interpreter: sh
        input: { who: "<< input.who >>" }
        script: "echo hi << input.who >>"
  sleepy:
    flow:
      nap: { type: shell, interpreter: sh, script: "sleep 30" }
triggers:
  every-minute:
    type: scheduler
    cron: "* * * * *"
    task: quick
    input: { who: cron }
  {extra}
"""


def workspace(tmp: Path, extra: str = "") -> Path:
    return write_workspace(tmp / "ws", WORKSPACE.replace("{extra}", extra))


async def jobs_of(runtime, source_id: str) -> list:  # type: ignore[no-untyped-def]
    rows, _ = await runtime.store.list_jobs(JobFilter(limit=1000))
    return sorted((r for r in rows if r.source_id == source_id), key=lambda r: r.created_at)


async def test_a_slot_fires_once_with_the_trigger_as_source(tmp_path: Path) -> None:
    clock = FakeClock(START + 5)
    rt = make_runtime(tmp_path, workspace(tmp_path), clock)
    await rt.open()
    try:
        assert await rt.scheduler.tick() == []  # nothing due yet: starts from now
        clock.advance(60)  # past 00:01:00
        fired = await rt.scheduler.tick()
        assert [f.fire_time for f in fired] == [START + 60]
        assert await rt.scheduler.tick() == []  # the same slot never twice
        job = await rt.orchestrator.wait(fired[0].job_id or "", 10)
        assert job.source_type == "trigger" and job.source_id == "ws/every-minute"
        assert job.input["who"] == "cron" and job.status.value == "completed"
        assert await rt.store.last_slot("ws/every-minute") == START + 60
    finally:
        await rt.close()


async def test_misfire_run_once_fires_the_latest_missed_slot_once(tmp_path: Path) -> None:
    clock = FakeClock(START + 5)
    db = f"sqlite:///{tmp_path / 'p.db'}"
    rt = make_runtime(tmp_path, workspace(tmp_path), clock, db_url=db)
    await rt.open()
    await rt.scheduler.tick()
    clock.advance(60)
    assert len(await rt.scheduler.tick()) == 1
    await rt.close()
    # Down for ten minutes: ten slots were missed.
    clock.advance(600)
    rt = make_runtime(tmp_path, workspace(tmp_path), clock, db_url=db)
    await rt.open()
    try:
        fired = await rt.scheduler.tick()
        assert [f.fire_time for f in fired] == [START + 660]
        assert await rt.scheduler.tick() == []
        assert len(await jobs_of(rt, "ws/every-minute")) == 2
    finally:
        await rt.close()


async def test_misfire_skip_fires_nothing_after_downtime(tmp_path: Path) -> None:
    extra = """late:
    type: scheduler
    cron: "*/5 * * * *"
    task: quick
    misfire: skip"""
    clock = FakeClock(START + 5)
    db = f"sqlite:///{tmp_path / 'p.db'}"
    rt = make_runtime(tmp_path, workspace(tmp_path, extra), clock, db_url=db)
    await rt.open()
    await rt.scheduler.tick()
    clock.advance(300)
    assert {f.trigger for f in await rt.scheduler.tick()} >= {"ws/late"}
    await rt.close()
    clock.advance(3720)  # missed twelve `late` slots; the last one 125 s ago
    rt = make_runtime(tmp_path, workspace(tmp_path, extra), clock, db_url=db)
    await rt.open()
    try:
        fired = await rt.scheduler.tick()
        assert [f.trigger for f in fired] == ["ws/every-minute"]  # run_once, the default
        clock.advance(180)  # the next `late` slot is on time again
        assert "ws/late" in {f.trigger for f in await rt.scheduler.tick()}
    finally:
        await rt.close()


async def test_two_runtimes_on_one_database_fire_each_slot_once(tmp_path: Path) -> None:
    clock = FakeClock(START + 5)
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    ws = workspace(tmp_path)
    first = make_runtime(tmp_path / "a", ws, clock, db_url=db)
    second = make_runtime(tmp_path / "b", ws, clock, db_url=db)
    await first.open()
    await second.open()
    try:
        await asyncio.gather(first.scheduler.tick(), second.scheduler.tick())
        total = 0
        for _ in range(5):
            clock.advance(60)
            a, b = await asyncio.gather(first.scheduler.tick(), second.scheduler.tick())
            assert len(a) + len(b) == 1
            total += 1
        assert len(await jobs_of(first, "ws/every-minute")) == total
    finally:
        await first.close()
        await second.close()


async def test_restarts_do_not_fire_a_slot_again(tmp_path: Path) -> None:
    clock = FakeClock(START + 5)
    db = f"sqlite:///{tmp_path / 'p.db'}"
    ws = workspace(tmp_path)
    fired_total = 0
    for _ in range(3):
        rt = make_runtime(tmp_path, ws, clock, db_url=db)
        await rt.open()
        await rt.scheduler.tick()
        clock.advance(60)
        fired_total += len(await rt.scheduler.tick())
        fired_total += len(await rt.scheduler.tick())
        await rt.close()
    clock.advance(1)  # the same minute: its slot was fired before the restart
    rt = make_runtime(tmp_path, ws, clock, db_url=db)
    await rt.open()
    try:
        assert await rt.scheduler.tick() == []
        assert fired_total == 3
        assert len(await jobs_of(rt, "ws/every-minute")) == 3
    finally:
        await rt.close()


async def _policy_run(tmp_path: Path, policy: str) -> tuple[list, object]:  # type: ignore[type-arg]
    extra = f"""naps:
    type: scheduler
    cron: "* * * * *"
    task: sleepy
    concurrency: {policy}"""
    text = WORKSPACE.replace("{extra}", extra).replace(
        "  every-minute:", "  every-minute:\n    enabled: false")
    clock = FakeClock(START + 5)
    rt = make_runtime(tmp_path, write_workspace(tmp_path / "ws", text), clock)
    await rt.open()
    try:
        await rt.scheduler.tick()
        clock.advance(60)
        first = await rt.scheduler.tick()
        await asyncio.sleep(0.3)  # the first job's step is running
        clock.advance(60)
        second = await rt.scheduler.tick()
        assert len(first) == len(second) == 1
        states = [await rt.orchestrator.get_state(f.job_id or "") for f in (*first, *second)]
        if policy == "cancel_previous":
            states[0] = await rt.orchestrator.wait(states[0].job_id, 10)
        return states, second[0]
    finally:
        await rt.close()


async def test_concurrency_skip_records_a_skipped_job(tmp_path: Path) -> None:
    states, fired = await _policy_run(tmp_path, "skip")
    assert states[0].status.value in ("pending", "running")
    assert states[1].status.value == "skipped" and fired.skipped  # type: ignore[attr-defined]


async def test_concurrency_allow_runs_both(tmp_path: Path) -> None:
    states, _ = await _policy_run(tmp_path, "allow")
    assert [s.status.value for s in states] == ["running", "running"]


async def test_concurrency_cancel_previous_cancels_the_running_job(tmp_path: Path) -> None:
    states, _ = await _policy_run(tmp_path, "cancel_previous")
    assert states[0].status.value == "cancelled"
    assert states[1].status.value in ("pending", "running")
