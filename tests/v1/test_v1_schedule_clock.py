"""Cloud schedules driven by a fake clock in-process: bookkeeping after every fire,
`disable_after_failures`, a fire that cannot start a job, and the overlap policies.

The runtime is real (SQLite store, real shell steps); only time is injected, so each
cron slot comes due when the test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from v1_helpers import workspace

from engine.cloud import Cloud, CloudOptions
from engine.runtime import Runtime, RuntimeOptions
from engine.testing import FakeClock

TENANT = "default"
TERMINAL = {"completed", "failed", "cancelled", "skipped"}


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[tuple[Cloud, FakeClock]]:
    clock = FakeClock()
    runtime = Runtime(RuntimeOptions(
        db_url=f"sqlite:///{tmp_path / 'p.db'}", logs_dir=tmp_path / "logs",
        artifacts_dir=tmp_path / "artifacts", concurrency=2), clock=clock)
    cloud = Cloud(runtime, CloudOptions(secrets_key="fake-clock-key"))
    cloud.attach()
    await runtime.open()
    try:
        dep = await cloud.deployments.create(TENANT, workspace())
        await cloud.deployments.wait_built(dep.id)
        yield cloud, clock
    finally:
        await cloud.close()
        await runtime.close()


async def fire(cloud: Cloud, clock: FakeClock, seconds: float) -> int:
    clock.advance(seconds)
    return await cloud.schedules.tick(clock.now())


async def view(cloud: Cloud, schedule_id: str) -> dict[str, Any]:
    return cloud.schedules.view(await cloud.schedules.get(TENANT, schedule_id))


async def settled(cloud: Cloud, schedule_id: str, job_id: str) -> dict[str, Any]:
    """The schedule once the end of `job_id` was counted."""
    for _ in range(400):
        obj = await cloud.schedules.get(TENANT, schedule_id)
        if obj.data.get("last_counted_job") == job_id:
            return cloud.schedules.view(obj)
        await asyncio.sleep(0.05)
    raise AssertionError(f"the end of job {job_id} was never counted")


async def status(cloud: Cloud, job_id: str, until: set[str] = TERMINAL) -> str:
    for _ in range(400):
        row = await cloud.jobs.store.get_job(job_id)
        if row is not None and row.status in until:
            return row.status
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {until}")


async def test_every_fire_is_recorded_and_failures_disable_the_schedule(
        cloud: tuple[Cloud, FakeClock]) -> None:
    c, clock = cloud
    s = await c.schedules.create(TENANT, {"workflow": "boom", "cron_expr": "*/10 * * * *",
                                          "disable_after_failures": 2})
    start = clock.now()
    assert (await view(c, s.id))["next_fire_at"] == "2026-01-01T00:10:00Z"
    # Nothing is due before the first slot.
    assert await fire(c, clock, 599) == 0
    assert (await view(c, s.id))["last_fire_at"] is None

    # First fire: the job starts, then fails; the failure is counted.
    assert await fire(c, clock, 1) == 1
    fired = await view(c, s.id)
    first_job = fired["last_job_id"]
    assert first_job is not None and fired["last_fire_at"] == "2026-01-01T00:10:00Z"
    assert fired["last_error"] is None and fired["consecutive_failures"] == 0
    assert await status(c, first_job) == "failed"
    after = await settled(c, s.id, first_job)
    assert after["consecutive_failures"] == 1 and after["enabled"] is True
    assert "exit" in (after["last_error"] or "") or after["last_error"]

    # Second failure in a row reaches disable_after_failures: 2.
    assert await fire(c, clock, 600) == 1
    second_job = (await view(c, s.id))["last_job_id"]
    assert second_job not in (None, first_job)
    await status(c, second_job)
    after = await settled(c, s.id, second_job)
    assert after["consecutive_failures"] == 2 and after["enabled"] is False
    assert after["next_fire_at"] is None

    # Disabled: no more fires.
    assert await fire(c, clock, 600) == 0
    assert (await view(c, s.id))["last_job_id"] == second_job
    # Re-enabling resets the count and fires again.
    await c.schedules.update(TENANT, s.id, {"enabled": True})
    assert (await view(c, s.id))["consecutive_failures"] == 0
    assert await fire(c, clock, 600) == 1
    assert (await view(c, s.id))["last_fire_at"] == "2026-01-01T00:40:00Z"
    assert clock.now() - start == 2400


async def test_a_success_resets_the_count_and_a_job_that_cannot_start_is_a_failure(
        cloud: tuple[Cloud, FakeClock]) -> None:
    c, clock = cloud
    s = await c.schedules.create(TENANT, {"workflow": "greet", "params": {"name": "x"},
                                          "cron_expr": "0 * * * *"})
    assert await fire(c, clock, 3600) == 1
    job = (await view(c, s.id))["last_job_id"]
    assert await status(c, job) == "completed"
    assert (await settled(c, s.id, job))["consecutive_failures"] == 0

    # Params that no longer validate: no job, the fire is a failure with its reason.
    await c.schedules.update(TENANT, s.id, {"params": {"times": 2}})
    assert await fire(c, clock, 3600) == 0
    failed = await view(c, s.id)
    assert failed["last_job_id"] == job
    assert failed["last_fire_at"] == "2026-01-01T02:00:00Z"
    assert failed["consecutive_failures"] == 1 and "name" in failed["last_error"]

    # Fixed again: the next job's success resets the count and clears the error.
    await c.schedules.update(TENANT, s.id, {"params": {"name": "y"}})
    assert await fire(c, clock, 3600) == 1
    fixed = await view(c, s.id)
    assert fixed["last_error"] is None and fixed["last_job_id"] != job
    await status(c, fixed["last_job_id"])
    assert (await settled(c, s.id, fixed["last_job_id"]))["consecutive_failures"] == 0


async def test_overlap_skip_and_cancel_previous(cloud: tuple[Cloud, FakeClock]) -> None:
    c, clock = cloud
    s = await c.schedules.create(TENANT, {"workflow": "slow", "params": {"seconds": 30},
                                          "cron_expr": "* * * * *", "overlap": "skip"})
    assert await fire(c, clock, 60) == 1
    running = (await view(c, s.id))["last_job_id"]
    await status(c, running, {"running"})

    # skip: the slot passes without a job while the previous one runs.
    assert await fire(c, clock, 60) == 0
    skipped = await view(c, s.id)
    assert skipped["last_job_id"] == running
    assert skipped["last_error"] == f"skipped: job {running} still running"
    assert skipped["last_fire_at"] == "2026-01-01T00:02:00Z"

    # cancel_previous: the running job is cancelled and a new one starts.
    await c.schedules.update(TENANT, s.id, {"overlap": "cancel_previous"})
    assert await fire(c, clock, 60) == 1
    newer = (await view(c, s.id))["last_job_id"]
    assert newer != running
    assert await status(c, running) == "cancelled"
    assert (await settled(c, s.id, running))["consecutive_failures"] == 0

    # allow: another job starts next to the running one.
    await c.schedules.update(TENANT, s.id, {"overlap": "allow"})
    assert await fire(c, clock, 60) == 1
    third = (await view(c, s.id))["last_job_id"]
    assert third not in (running, newer)
    assert await status(c, newer, {"running"}) == "running"
    for job_id in (newer, third):
        await c.jobs.cancel(TENANT, job_id, None)
        assert await status(c, job_id) == "cancelled"


async def test_six_field_cron_fires_every_two_seconds(cloud: tuple[Cloud, FakeClock]) -> None:
    c, clock = cloud
    s = await c.schedules.create(TENANT, {"workflow": "greet", "params": {"name": "s"},
                                          "cron_expr": "*/2 * * * * *"})
    assert (await view(c, s.id))["next_fire_at"] == "2026-01-01T00:00:02Z"
    jobs = set()
    for _ in range(3):
        assert await fire(c, clock, 2) == 1
        jobs.add((await view(c, s.id))["last_job_id"])
    assert len(jobs) == 3
    for job_id in jobs:
        assert await status(c, job_id) == "completed"


async def test_a_nonce_is_kept_for_24_hours(cloud: tuple[Cloud, FakeClock]) -> None:
    from engine.cloudjobs import JobRequest

    c, clock = cloud
    req = JobRequest(workflow="greet", params={"name": "n"}, nonce="daily")
    first, repeat = await c.jobs.create(TENANT, req)
    assert repeat is False
    clock.advance(24 * 3600 - 1)
    assert await c.jobs.create(TENANT, req) == (first, True)
    clock.advance(2)  # past 24 h: the nonce names a new job
    second, repeat = await c.jobs.create(TENANT, req)
    assert repeat is False and second != first
    assert await c.jobs.create(TENANT, req) == (second, True)
    for job_id in (first, second):  # (the first timed out on the fake clock by now)
        obj, _ = await c.jobs.record(TENANT, job_id)
        assert obj.data["nonce"] == "daily"
        await status(c, job_id)
