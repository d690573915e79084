"""The scheduler: cron triggers → jobs, each slot exactly once (DESIGN §2, §5).

Every pass (`tick`) looks at the enabled `scheduler` triggers of every workspace's
current revision and works out which cron slots came due since it last looked. A slot
fires exactly once, across restarts and several servers on one database:
1. its job is created under the idempotency key `cron:<workspace>/<trigger>:<fire time>`
   (`slot_key`), so a repeat — another server, or a leader that took over — gets the same
   job back and creates nothing;
2. then the slot is recorded in the store (`claim_slot`, `UNIQUE(trigger, fire_time)`).
A leader that dies between the two leaves a job and an unrecorded slot: the next leader
(whose pass starts from the latest *recorded* slot) finds the slot due again, gets the
same job from its key, and records it. A slot whose job could not be created (e.g. the
trigger's input no longer validates) is not recorded, and is logged.

Lateness: a slot up to `grace` seconds old fires as usual. Older slots were missed
(the server was down or asleep): with `misfire: run_once` the latest missed slot fires
once (when nothing fired on time in the same pass), with `misfire: skip` none does.
Where a trigger starts from after a restart, or when this server becomes the leader, is
the latest slot recorded in the store.

Concurrency, when the trigger's previous job is still pending or running: `allow` starts
another, `skip` records the new job as `skipped`, `cancel_previous` cancels the running
ones first. Jobs carry `source_type=trigger` and `source_id=<workspace>/<trigger>`.

The clock is injectable; tests drive `tick()` with `engine.testing.FakeClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from engine.clock import Clock, SystemClock
from engine.core import commands as cmd
from engine.cron import fire_times, latest_fire_time, next_fire_time
from engine.errors import PartiturError
from engine.model import TriggerSpec
from engine.triggers.common import active_jobs, trigger_input, trigger_key

if TYPE_CHECKING:
    from engine.orchestrator import Orchestrator

log = logging.getLogger("partitur.scheduler")

MISFIRE_GRACE = 30.0
MAX_SLEEP = 1.0


class ScheduleSource(Protocol):
    """More schedules to fire each pass (claiming their slots with `claim_slot`)."""

    async def tick(self, now: float) -> int: ...

    def next_due(self, now: float) -> float | None: ...


def slot_key(trigger: str, fire_time: float) -> str:
    """The idempotency key of the job of slot `fire_time` of `trigger` (`<ws>/<name>`)."""
    return f"cron:{trigger}:{datetime.fromtimestamp(fire_time, UTC).isoformat()}"


@dataclass(frozen=True, slots=True)
class Fired:
    """One slot this scheduler recorded and its job, or a slot whose job could not be
    created (`job_id` None, slot not recorded)."""

    trigger: str
    fire_time: float
    job_id: str | None
    skipped: bool = False


class Scheduler:
    """Fires cron triggers; `start()` runs `tick()` in a loop until `stop()`."""

    def __init__(self, orchestrator: Orchestrator, *, clock: Clock | None = None,
                 grace: float = MISFIRE_GRACE, max_sleep: float = MAX_SLEEP) -> None:
        self.orchestrator = orchestrator
        self.store = orchestrator.store
        self.workspaces = orchestrator.workspaces
        self.clock: Clock = clock or orchestrator.clock or SystemClock()
        self.grace = grace
        self.max_sleep = max_sleep
        self._cursors: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._sources: list[ScheduleSource] = []

    def add_source(self, source: ScheduleSource) -> None:
        """Also fire the schedules of `source` (the cloud API's stored schedules)."""
        self._sources.append(source)

    # --- one pass --------------------------------------------------------------------

    def triggers(self) -> list[tuple[str, str, TriggerSpec]]:
        """`(workspace, trigger name, spec)` of every enabled scheduler trigger."""
        found: list[tuple[str, str, TriggerSpec]] = []
        for ws in self.workspaces.all():
            if ws.current is None:
                continue
            for name, spec in ws.current.spec.triggers.items():
                if spec.type == "scheduler" and spec.enabled and spec.cron:
                    found.append((ws.name, name, spec))
        return found

    async def tick(self) -> list[Fired]:
        """Fire every slot that came due since the last pass; what this process fired."""
        now = self.clock.now()
        fired: list[Fired] = []
        seen: set[str] = set()
        for workspace, name, spec in self.triggers():
            key = trigger_key(workspace, name)
            seen.add(key)
            try:
                slots = await self._due(key, spec, now)
            except PartiturError:
                log.exception("trigger %s: cannot compute its slots", key)
                continue
            for slot in slots:
                result = await self._fire(workspace, name, spec, slot, now)
                if result is not None:
                    fired.append(result)
        for key in set(self._cursors) - seen:
            del self._cursors[key]  # removed or disabled: start afresh when it returns
        for source in self._sources:
            try:
                await source.tick(now)
            except Exception:
                log.exception("schedule source %r failed", source)
        return fired

    async def _due(self, key: str, spec: TriggerSpec, now: float) -> list[float]:
        assert spec.cron is not None
        cursor = self._cursors.get(key)
        if cursor is None:
            last = await self.store.last_slot(key)
            cursor = last if last is not None else now
        self._cursors[key] = max(cursor, now)
        on_time = fire_times(spec.cron, spec.timezone, max(cursor, now - self.grace), now)
        if on_time or spec.misfire == "skip":
            return on_time
        missed = latest_fire_time(spec.cron, spec.timezone, now - self.grace)
        return [missed] if missed is not None and missed > cursor else []

    async def _fire(self, workspace: str, name: str, spec: TriggerSpec, slot: float,
                    now: float) -> Fired | None:
        key = trigger_key(workspace, name)
        idempotency_key = slot_key(key, slot)
        try:
            existing = await self.store.find_key(f"{workspace}/{spec.task}", idempotency_key)
            if existing is not None:
                # Created by a server that stopped before recording the slot.
                job_id, skipped = existing, False
            else:
                job_id, skipped = await self._create(workspace, name, spec, slot,
                                                     idempotency_key)
        except Exception:
            log.exception("trigger %s: the job of slot %s could not be created", key, slot)
            return Fired(key, slot, None)
        if not await self.store.claim_slot(key, slot, job_id, now):
            return None  # another server (or an earlier run of this one) recorded it
        return Fired(key, slot, job_id, skipped=skipped)

    async def _create(self, workspace: str, name: str, spec: TriggerSpec, slot: float,
                      idempotency_key: str) -> tuple[str, bool]:
        """Create the slot's job under its key (applying the concurrency policy)."""
        key = trigger_key(workspace, name)
        orch = self.orchestrator
        running = await active_jobs(self.store, workspace, spec.task, key)
        skip_reason = None
        if running and spec.concurrency == "skip":
            skip_reason = f"trigger {name}: job {running[-1]} is still running"
        elif running and spec.concurrency == "cancel_previous":
            for previous in running:
                with contextlib.suppress(PartiturError):
                    await orch.command(previous, cmd.Cancel(
                        by=f"trigger:{key}", reason=f"a newer run of trigger {name} started"))
        ws = self.workspaces.get(workspace)
        task = ws.require().spec.tasks[spec.task]
        when = datetime.fromtimestamp(slot, UTC).isoformat()
        raw = trigger_input(spec, task, secrets=ws.secrets, context={
            "trigger": {"name": name, "workspace": workspace, "fire_time": when}})
        created = await orch.create_job(
            workspace, spec.task, raw, source_type="trigger", source_id=key,
            priority=spec.priority, skip_reason=skip_reason, idempotency_key=idempotency_key,
            when_paused="skip" if spec.concurrency == "skip" else "queue",
        )
        return created, skip_reason is not None

    # --- the loop --------------------------------------------------------------------

    def next_due(self) -> float | None:
        """The earliest next slot of any trigger (epoch seconds), or None."""
        now = self.clock.now()
        times: list[float] = []
        for _, _, spec in self.triggers():
            assert spec.cron is not None
            with contextlib.suppress(PartiturError):
                t = next_fire_time(spec.cron, spec.timezone, now)
                if t is not None:
                    times.append(t)
        for source in self._sources:
            t = source.next_due(now)
            if t is not None:
                times.append(t)
        return min(times) if times else None

    def start(self) -> None:
        """Run the scheduler in the background (from the slots recorded in the store: a
        server that becomes the leader re-evaluates what the last one left unrecorded)."""
        if self._task is None:
            self._cursors.clear()
            self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        """Look again now (a workspace changed)."""
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler pass failed")
            due = self.next_due()
            delay = self.max_sleep
            if due is not None:
                delay = min(delay, max(0.0, due - self.clock.now()) + 0.001)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

