"""A cron slot fires exactly once when its leader dies between creating the job and
recording the slot: the next scheduler gets the same job back from the slot's key."""

from __future__ import annotations

from pathlib import Path

from trigger_support import make_runtime, write_workspace

from engine.scheduler import slot_key
from engine.store.base import JobFilter
from engine.testing import FakeClock

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z

WORKSPACE = """
tasks:
  quick:
    flow:
      hi: { type: shell, interpreter: sh, script: "echo hi" }
  sleepy:
    flow:
      nap: { type: shell, interpreter: sh, script: "sleep 30" }
triggers:
  every-minute: { type: scheduler, cron: "* * * * *", task: quick }
  busy: { type: scheduler, cron: "* * * * *", task: sleepy, concurrency: cancel_previous }
"""


def test_slot_key_names_the_trigger_and_the_fire_time() -> None:
    assert slot_key("ws/t", START + 60) == "cron:ws/t:2026-01-01T00:01:00+00:00"


async def test_a_slot_left_unrecorded_by_a_dead_leader_fires_once(tmp_path: Path) -> None:
    ws = write_workspace(tmp_path / "ws", WORKSPACE)
    db = f"sqlite:///{tmp_path / 'p.db'}"
    clock = FakeClock(START + 5)
    # No embedded workers: the jobs stay running (queued for workers), no process runs.
    rt = make_runtime(tmp_path, ws, clock, db_url=db, concurrency=0)
    await rt.open()
    await rt.scheduler.tick()
    clock.advance(60)
    assert len(await rt.scheduler.tick()) == 2  # 00:01 recorded for both triggers
    # The leader creates the jobs of slot 00:02 under their keys, then dies before
    # recording the slot (what `_fire` does, cut after its first half).
    clock.advance(60)
    slot = START + 120
    left: dict[str, str] = {}
    for trigger, task in (("every-minute", "quick"), ("busy", "sleepy")):
        left[trigger] = await rt.orchestrator.create_job(
            "ws", task, {}, source_type="trigger", source_id=f"ws/{trigger}",
            idempotency_key=slot_key(f"ws/{trigger}", slot))
    assert await rt.store.last_slot("ws/every-minute") == START + 60
    await rt.close()

    # The next leader, a few seconds later, finds the slot due and records the same jobs.
    clock.advance(3)
    rt = make_runtime(tmp_path, ws, clock, db_url=db, concurrency=0)
    await rt.open()
    try:
        fired = {f.trigger: f for f in await rt.scheduler.tick()}
        assert {t: (f.fire_time, f.job_id) for t, f in fired.items()} == {
            "ws/every-minute": (slot, left["every-minute"]), "ws/busy": (slot, left["busy"])}
        assert await rt.store.last_slot("ws/every-minute") == slot
        rows, _ = await rt.store.list_jobs(JobFilter(limit=100))
        per_trigger = {t: [r for r in rows if r.source_id == f"ws/{t}"] for t in left}
        assert len(per_trigger["every-minute"]) == 2  # 00:01 and 00:02, nothing more
        assert len(per_trigger["busy"]) == 2
        # `cancel_previous` did not cancel the slot's own job when it was found again.
        busy = await rt.orchestrator.get_state(left["busy"])
        assert busy.status.value == "running" and busy.cancel_requested is False
        assert await rt.scheduler.tick() == []
    finally:
        await rt.close()
