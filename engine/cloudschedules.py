"""Cloud API schedules: cron schedules stored in the database, fired by the scheduler.

`CloudSchedules` is a source of the `Scheduler` (`Scheduler.add_source`): each pass it
fires the due slots of every enabled schedule, claiming each slot in the store first
(`claim_slot("v1:<schedule id>", fire_time)`) so several servers fire it once. Cron has 5
fields, or 6 with seconds first (as in YAML triggers), and is evaluated in the
schedule's timezone (DST-correct, `engine.cron`). After each fire
`last_fire_at`, `last_job_id`, `last_error` and `consecutive_failures` are updated; with
`disable_after_failures: N` a schedule whose jobs failed (or could not start) N times in
a row is disabled. Updates, fires and job ends each change a schedule's record with
`CloudRepository.modify` (written only over the version read, else re-applied), so a
`schedules/update` on one server and a fire on the leader never lose each other's
fields. `overlap`: `allow` (default) starts another job while the previous one
runs, `skip` does not fire then, `cancel_previous` cancels the running one first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.clock import Clock, SystemClock, new_job_id
from engine.cloudjobs import JOB, MAX_TIMEOUT, CloudJobs, JobRequest
from engine.core import commands as cmd
from engine.core.state import JobState
from engine.credentials import Cipher
from engine.cron import fire_times, next_runs, validate_cron
from engine.errors import Issue, NotFound, PartiturError, ValidationFailed
from engine.store.cloud import CloudObject, CloudRepository
from engine.views import iso

log = logging.getLogger("partitur.schedules")

SCHEDULE = "schedule"
OVERLAP = ("allow", "skip", "cancel_previous")
DEFAULT_TIMEOUT = 900
GRACE = 30.0


def next_fire(cron: str, timezone: str, after: float) -> float | None:
    runs = next_runs(cron, timezone, count=1, after=datetime.fromtimestamp(after, UTC))
    return runs[0].timestamp() if runs else None


class CloudSchedules:
    """CRUD over stored schedules, and the scheduler source that fires them."""

    def __init__(self, repo: CloudRepository, jobs: CloudJobs, cipher: Cipher, *,
                 clock: Clock | None = None) -> None:
        self.repo = repo
        self.jobs = jobs
        self.cipher = cipher
        self.clock: Clock = clock or SystemClock()
        self._cache: list[CloudObject] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    # --- CRUD ------------------------------------------------------------------------

    def _validate(self, data: Mapping[str, Any]) -> None:
        issues: list[Issue] = []
        try:
            ZoneInfo(str(data["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationFailed(issues=[Issue(
                message=f"unknown timezone {data['timezone']!r} (an IANA name such as "
                        "'Europe/Berlin')", path="timezone")]) from None
        if len(str(data["cron_expr"]).split()) not in (5, 6):
            issues.append(Issue(message="'cron_expr' must have 5 fields, or 6 with seconds "
                                        "first", path="cron_expr"))
        else:
            try:
                validate_cron(data["cron_expr"], data["timezone"])
            except ValidationFailed as exc:
                issues.append(Issue(message=exc.message, path="cron_expr"))
        if not 1 <= int(data["timeout_seconds"]) <= MAX_TIMEOUT:
            issues.append(Issue(message=f"'timeout_seconds' must be between 1 and "
                                        f"{MAX_TIMEOUT}", path="timeout_seconds"))
        if (data.get("callback_url") is None) != (data.get("callback_secret") is None):
            issues.append(Issue(message="'callback_url' and 'callback_secret' must be given "
                                        "together", path="callback_secret"))
        if data.get("overlap", "allow") not in OVERLAP:
            issues.append(Issue(message=f"'overlap' must be one of {', '.join(OVERLAP)}",
                                path="overlap"))
        if issues:
            raise ValidationFailed(issues=issues)

    async def create(self, tenant: str, fields: Mapping[str, Any]) -> CloudObject:
        await self.jobs.deployments.resolve(tenant, fields["workflow"])
        data: dict[str, Any] = {
            "workflow": fields["workflow"], "params": fields.get("params") or {},
            "cron_expr": fields["cron_expr"], "timezone": fields.get("timezone") or "UTC",
            "timeout_seconds": fields.get("timeout_seconds") or DEFAULT_TIMEOUT,
            "callback_url": fields.get("callback_url"),
            "callback_secret": fields.get("callback_secret"),
            "skip_callbacks": bool(fields.get("skip_callbacks", False)),
            "enabled": fields.get("enabled", True) is not False,
            "disable_after_failures": fields.get("disable_after_failures"),
            "overlap": fields.get("overlap") or "allow",
            "last_fire_at": None, "last_job_id": None, "last_error": None,
            "consecutive_failures": 0, "last_counted_job": None,
        }
        self._validate(data)
        self._seal(data)
        now = self.clock.now()
        obj = CloudObject(SCHEDULE, new_job_id(), tenant, now, now, data)
        await self.repo.insert(obj)
        self._cache = None
        return obj

    def _seal(self, data: dict[str, Any]) -> None:
        if data.get("callback_secret") is not None:
            data["callback_secret"] = self.cipher.encrypt(data["callback_secret"])

    async def get(self, tenant: str, schedule_id: str) -> CloudObject:
        obj = await self.repo.get(SCHEDULE, schedule_id)
        if obj is None or obj.tenant != tenant:
            raise NotFound(f"schedule {schedule_id!r} not found")
        return obj

    async def update(self, tenant: str, schedule_id: str,
                     fields: Mapping[str, Any]) -> CloudObject:
        await self.get(tenant, schedule_id)
        now = self.clock.now()
        updated = await self.repo.modify(SCHEDULE, schedule_id,
                                         lambda obj: self._updated(obj, fields, now))
        if updated is None:
            raise NotFound(f"schedule {schedule_id!r} not found")
        self._cache = None
        return updated

    def _updated(self, obj: CloudObject, fields: Mapping[str, Any], now: float
                 ) -> CloudObject:
        data = dict(obj.data)
        for key in ("params", "cron_expr", "timezone", "timeout_seconds", "skip_callbacks",
                    "enabled", "disable_after_failures", "overlap"):
            if key in fields and (fields[key] is not None or key == "disable_after_failures"):
                data[key] = fields[key]
        if "callback_url" in fields or "callback_secret" in fields:
            data["callback_url"] = fields.get("callback_url", data["callback_url"])
            data["callback_secret"] = fields.get("callback_secret")
            if "callback_secret" not in fields and data["callback_url"] is not None:
                data["callback_secret"] = self.cipher.decrypt(obj.data["callback_secret"]) \
                    if obj.data.get("callback_secret") else None
            self._validate(data)
            self._seal(data)
        else:
            self._validate({**data, "callback_secret": data["callback_url"] and "x"})
        if fields.get("enabled") is True and not obj.data.get("enabled"):
            data["consecutive_failures"] = 0
        return CloudObject(obj.kind, obj.id, obj.tenant, obj.created_at, now, data)

    async def delete(self, tenant: str, schedule_id: str) -> None:
        obj = await self.get(tenant, schedule_id)
        await self.repo.delete(SCHEDULE, obj.id)
        self._cache = None

    async def list_for(self, tenant: str, *, enabled: bool | None, workflow: str | None,
                   limit: int) -> list[CloudObject]:
        found = [s for s in await self.repo.all(SCHEDULE, tenant, cap=10_000)
                 if (enabled is None or s.data["enabled"] == enabled)
                 and (workflow is None or s.data["workflow"] == workflow)]
        return found[:limit]

    def view(self, obj: CloudObject) -> dict[str, Any]:
        d = obj.data
        nxt = None
        if d["enabled"]:
            with contextlib.suppress(PartiturError):
                nxt = next_fire(d["cron_expr"], d["timezone"], self.clock.now())
        return {"id": obj.id, "workflow": d["workflow"], "params": d["params"],
                "cron_expr": d["cron_expr"], "timezone": d["timezone"],
                "timeout_seconds": d["timeout_seconds"], "callback_url": d["callback_url"],
                "skip_callbacks": d["skip_callbacks"], "enabled": d["enabled"],
                "next_fire_at": iso(nxt), "last_fire_at": iso(d["last_fire_at"]),
                "last_job_id": d["last_job_id"], "last_error": d["last_error"],
                "consecutive_failures": d["consecutive_failures"],
                "disable_after_failures": d.get("disable_after_failures"),
                "overlap": d.get("overlap", "allow"),
                "created_at": iso(obj.created_at), "updated_at": iso(obj.updated_at)}

    # --- the scheduler source --------------------------------------------------------

    async def _schedules(self) -> list[CloudObject]:
        if self._cache is None:
            self._cache = [s for s in await self.repo.all(SCHEDULE, None) if s.data["enabled"]]
        return self._cache

    def next_due(self, now: float) -> float | None:
        """The earliest next slot of a cached enabled schedule (for the scheduler's sleep)."""
        times = []
        for s in self._cache or []:
            with contextlib.suppress(PartiturError):
                t = next_fire(s.data["cron_expr"], s.data["timezone"], now)
                if t is not None:
                    times.append(t)
        return min(times) if times else None

    async def tick(self, now: float) -> int:
        """Fire every due slot of every enabled schedule; how many jobs were started."""
        self._cache = None
        fired = 0
        for s in await self._schedules():
            key = f"v1:{s.id}"
            last = await self.jobs.store.last_slot(key)
            start = max(last if last is not None else s.created_at, now - GRACE)
            try:
                slots = fire_times(s.data["cron_expr"], s.data["timezone"], start, now)
            except PartiturError:
                continue
            for slot in slots[-1:]:  # missed slots fire once
                if await self._fire(s, key, slot, now):
                    fired += 1
        return fired  # the cache stays for `next_due`; the next pass reloads it

    async def _fire(self, s: CloudObject, key: str, slot: float, now: float) -> bool:
        job_id_hint = new_job_id()
        if not await self.jobs.store.claim_slot(key, slot, job_id_hint, now):
            return False
        d = s.data
        fresh = await self.repo.get(SCHEDULE, s.id)
        if fresh is None or not fresh.data["enabled"]:
            return False
        d = fresh.data
        running = await self._running(fresh)
        if running and d.get("overlap") == "skip":
            await self._record(fresh, now, None, f"skipped: job {running[-1]} still running",
                               failed=False)
            return False
        if running and d.get("overlap") == "cancel_previous":
            for job_id in running:
                with contextlib.suppress(PartiturError):
                    await self.jobs.orchestrator.command(job_id, cmd.Cancel(
                        by=f"schedule:{s.id}", reason="a newer run of its schedule started"))
        secret = self.cipher.decrypt(d["callback_secret"]) if d.get("callback_secret") else None
        try:
            job_id, _ = await self.jobs.create(fresh.tenant, JobRequest(
                workflow=d["workflow"], params=d["params"],
                timeout_seconds=int(d["timeout_seconds"]), callback_url=d["callback_url"],
                callback_secret=secret, skip_callbacks=d["skip_callbacks"],
                schedule_id=s.id))
        except PartiturError as exc:
            await self._record(fresh, now, None, exc.message, failed=True)
            return False
        await self._record(fresh, now, job_id, None, failed=False)
        return True

    async def _running(self, s: CloudObject) -> list[str]:
        ids = []
        for job_id in await self.jobs.store.active_job_ids():
            obj = await self.repo.get(JOB, job_id)
            if obj is not None and obj.data.get("schedule_id") == s.id:
                ids.append(job_id)
        return ids

    async def _record(self, s: CloudObject, now: float, job_id: str | None,
                      error: str | None, *, failed: bool) -> None:
        def change(fresh: CloudObject) -> CloudObject:
            failures = fresh.data["consecutive_failures"] + (1 if failed else 0)
            fields: dict[str, Any] = {"last_fire_at": now, "last_error": error,
                                      "consecutive_failures": failures}
            if job_id is not None:
                fields["last_job_id"] = job_id
            limit = fresh.data.get("disable_after_failures")
            if failed and limit and failures >= int(limit):
                fields["enabled"] = False
            return fresh.changed(now, **fields)

        await self.repo.modify(SCHEDULE, s.id, change)

    def listener(self, state: JobState, events: Any) -> None:
        """`Orchestrator.on_events`: count a scheduled job's end as success or failure."""
        if state.source_type != "cloud" or not state.terminal:
            return
        task = asyncio.ensure_future(self._job_ended(state.job_id, str(state.status)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _job_ended(self, job_id: str, status: str) -> None:
        try:
            obj = await self.repo.get(JOB, job_id)
            schedule_id = obj.data.get("schedule_id") if obj is not None else None
            if not schedule_id:
                return
            failed = status in ("failed", "JobStatus.FAILED")
            error = None
            if failed:
                row = await self.jobs.store.get_job(job_id)
                error = (row.error if row is not None else None) or "job failed"
            now = self.clock.now()

            def change(s: CloudObject) -> CloudObject | None:
                if s.data.get("last_counted_job") == job_id:
                    return None
                failures = s.data["consecutive_failures"] + 1 if failed else 0
                fields: dict[str, Any] = {"consecutive_failures": failures,
                                          "last_counted_job": job_id}
                if failed:
                    fields["last_error"] = error
                limit = s.data.get("disable_after_failures")
                if failed and limit and failures >= int(limit):
                    fields["enabled"] = False
                return s.changed(now, **fields)

            await self.repo.modify(SCHEDULE, schedule_id, change)
            self._cache = None
        except Exception:
            log.exception("schedule bookkeeping of job %s failed", job_id)
