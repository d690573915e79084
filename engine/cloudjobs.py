"""Cloud API jobs: a workflow run on a tenant's deployment, as the `/v1` clients see it.

A cloud job is an engine job (workspace = the deployment's workspace, task = the
workflow) plus a record (`kind="job"`) with the tenant, the deployment, the nonce, the
callback and the credentials it uses. The record is written before the engine job, so
nothing of the cloud's (callbacks included) can be lost once the job exists.

Statuses: engine `pending` → `queued`; `running` → `running` (or `starting_browser`
while the job's first browser step is launching); `skipped` → `cancelled`; the three
terminal states as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.clock import Clock, SystemClock, new_job_id
from engine.compiler.validate import LoadedWorkspace
from engine.core import commands as cmd
from engine.core.projections import JobRow, StepRow
from engine.credentials import Cipher, Credentials
from engine.deployments import Deployments
from engine.errors import Conflict, Issue, NotFound, PartiturError, ValidationFailed
from engine.orchestrator import Orchestrator
from engine.store.cloud import CloudObject, CloudRepository
from engine.views import iso

JOB = "job"
NONCE_TTL = 24 * 3600.0
BROWSER_START_WINDOW = 3.0
STATUSES = ("queued", "starting_browser", "running", "completed", "failed", "cancelled")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
# The engine statuses a cloud status can come from (`cloud_status`): `jobs/list` asks the
# store for those, then keeps the jobs whose cloud status is the one asked for.
ENGINE_STATUSES: Mapping[str, tuple[str, ...]] = {
    "queued": ("pending",), "starting_browser": ("running",), "running": ("running",),
    "completed": ("completed",), "failed": ("failed",),
    "cancelled": ("cancelled", "skipped")}
DEFAULT_TIMEOUT, MAX_TIMEOUT = 1800, 3600


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What `jobs/create` (or a schedule) asks for."""

    workflow: str
    params: Mapping[str, Any]
    nonce: str | None = None
    timeout_seconds: int = DEFAULT_TIMEOUT
    callback_url: str | None = None
    callback_secret: str | None = None
    skip_callbacks: bool = False
    schedule_id: str | None = None
    by: str | None = None


def cloud_status(row: JobRow, steps: list[StepRow] | None, now: float) -> str:
    """The cloud status of an engine job row."""
    if row.status == "pending":
        return "queued"
    if row.status == "skipped":
        return "cancelled"
    if row.status == "running" and steps:
        done = any(s.status == "completed" for s in steps)
        launching = [s for s in steps if s.status == "running" and s.action_type == "browser"
                     and s.started_at is not None and now - s.started_at < BROWSER_START_WINDOW]
        if launching and not done:
            return "starting_browser"
    return row.status if row.status in STATUSES else "running"


def mapped_stack(loaded: LoadedWorkspace | None, workflow: str,
                 steps: list[StepRow]) -> dict[str, Any] | None:
    """The failing step and where it is in the workspace (file, line, column)."""
    failed = next((s for s in steps if s.status == "failed"), None)
    if failed is None:
        return None
    out: dict[str, Any] = {"step": failed.step_name, "action": failed.action_name,
                           "action_type": failed.action_type, "error": failed.error_message,
                           "error_kind": failed.error_kind, "exit_code": failed.exit_code,
                           "file": None, "line": None, "column": None}
    entry = loaded.entries.get(("tasks", workflow)) if loaded is not None else None
    if entry is not None:
        base = failed.loop_of or failed.step_name
        line, column = entry.document.locate((*entry.path, "flow", base), key=True)
        out.update(file=entry.document.file, line=line, column=column)
    return out


class CloudJobs:
    """Create, read and cancel a tenant's cloud jobs."""

    def __init__(self, repo: CloudRepository, orchestrator: Orchestrator,
                 deployments: Deployments, credentials: Credentials, cipher: Cipher, *,
                 clock: Clock | None = None) -> None:
        self.repo = repo
        self.orchestrator = orchestrator
        self.store = orchestrator.store
        self.deployments = deployments
        self.credentials = credentials
        self.cipher = cipher
        self.clock: Clock = clock or SystemClock()

    async def create(self, tenant: str, req: JobRequest) -> tuple[str, bool]:
        """Start a job; `(job_id, True)` when the nonce names an earlier job instead."""
        if (req.callback_url is None) != (req.callback_secret is None):
            raise ValidationFailed(issues=[Issue(
                message="'callback_url' and 'callback_secret' must be given together",
                path="callback_secret" if req.callback_url else "callback_url")])
        if not 1 <= req.timeout_seconds <= MAX_TIMEOUT:
            raise ValidationFailed(issues=[Issue(
                message=f"'timeout_seconds' must be between 1 and {MAX_TIMEOUT}",
                path="timeout_seconds")])
        nonce_name = f"{req.workflow}\n{req.nonce}" if req.nonce else None
        if nonce_name is not None:
            earlier = await self._nonce(tenant, nonce_name)
            if earlier is not None:
                return earlier, True
        dep = await self.deployments.resolve(tenant, req.workflow)
        loaded = await self.deployments.load(dep)
        task = loaded.spec.tasks[req.workflow]
        params, used = await self.credentials.for_task(tenant, task, req.params)
        job_id = new_job_id()
        now = self.clock.now()
        record = CloudObject(JOB, job_id, tenant, now, now, {
            "workflow": req.workflow, "deployment_id": dep.id, "nonce": req.nonce,
            "params": dict(req.params), "timeout_seconds": req.timeout_seconds,
            "callback_url": req.callback_url,
            "callback_secret": (self.cipher.encrypt(req.callback_secret)
                                if req.callback_secret else None),
            "skip_callbacks": req.skip_callbacks, "credentials": used,
            "schedule_id": req.schedule_id, "callbacks": "pending"}, name=nonce_name)
        try:
            await self.repo.insert(record)
        except Conflict:
            earlier = await self._nonce(tenant, nonce_name or "")
            if earlier is None:
                raise
            return earlier, True
        try:
            await self.orchestrator.create_job(
                dep.data["workspace"], req.workflow, params, source_type="cloud",
                source_id=req.schedule_id or tenant, job_id=job_id, by=req.by,
                timeout=float(req.timeout_seconds))
        except PartiturError:
            await self.repo.delete(JOB, job_id)
            raise
        return job_id, False

    async def _nonce(self, tenant: str, name: str) -> str | None:
        found = await self.repo.by_name(JOB, tenant, name)
        if found is None:
            return None
        if self.clock.now() - found.created_at <= NONCE_TTL:
            return found.id
        # An expired nonce: free the name for the new job.
        await self.repo.update(CloudObject(found.kind, found.id, found.tenant,
                                           found.created_at, found.updated_at, found.data))
        return None

    async def record(self, tenant: str, job_id: str) -> tuple[CloudObject, JobRow]:
        obj = await self.repo.get(JOB, job_id)
        row = await self.store.get_job(job_id) if obj is not None else None
        if obj is None or row is None or obj.tenant != tenant:
            raise NotFound(f"job {job_id!r} not found")
        with contextlib.suppress(PartiturError, OSError):
            await self.deployments.ensure_named(row.workspace)  # built on another replica
        return obj, row

    def _loaded(self, row: JobRow) -> LoadedWorkspace | None:
        with contextlib.suppress(PartiturError):
            return self.orchestrator.workspaces.revision(row.workspace, row.revision)
        return None

    async def summary(self, obj: CloudObject, row: JobRow,
                      steps: list[StepRow] | None = None) -> dict[str, Any]:
        """A `jobs/list` entry."""
        if steps is None and row.status == "running":
            steps = await self.store.get_steps(row.job_id)
        return {"job_id": row.job_id, "deployment_id": obj.data["deployment_id"],
                "workflow_id": obj.data["workflow"], "workflow": obj.data["workflow"],
                "status": cloud_status(row, steps, self.clock.now()),
                "created_at": iso(row.created_at), "completed_at": iso(row.completed_at)}

    async def detail(self, obj: CloudObject, row: JobRow) -> dict[str, Any]:
        """The `jobs/get` answer."""
        steps = await self.store.get_steps(row.job_id)
        status = cloud_status(row, steps, self.clock.now())
        stack = mapped_stack(self._loaded(row), row.task_name, steps) \
            if row.status == "failed" else None
        error = row.error if row.status in ("failed", "cancelled", "skipped") else None
        return {
            "job_id": row.job_id, "deployment_id": obj.data["deployment_id"],
            "deployment_version": row.revision, "workflow_id": obj.data["workflow"],
            "workflow": obj.data["workflow"], "params": obj.data.get("params") or {},
            "status": status, "created_at": iso(row.created_at),
            "started_at": iso(row.started_at), "completed_at": iso(row.completed_at),
            "result": dict(row.output) if row.output is not None and status == "completed"
            else None,
            "error": error, "mapped_stack": stack, "recording_url": None,
            "hosted_workflow_id": None, "live_view_url": None,
            "timeout_seconds": obj.data.get("timeout_seconds"),
            "nonce": obj.data.get("nonce"),
        }

    async def page(self, tenant: str, *, status: str | None, limit: int,
                   cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; `cursor` is the last job id of the previous page (None: the
        first page); the returned cursor is None on the last page."""
        out: list[dict[str, Any]] = []
        before = cursor
        while len(out) <= limit:
            if status is None:
                chunk = await self.repo.page(JOB, tenant, before=before, limit=200)
            else:
                chunk = await self.repo.jobs_page(tenant, ENGINE_STATUSES[status],
                                                  before=before, limit=200)
            for obj in chunk:
                row = await self.store.get_job(obj.id)
                if row is None:
                    continue
                item = await self.summary(obj, row)
                if status is None or item["status"] == status:
                    out.append(item)
                    if len(out) > limit:
                        break
            if len(chunk) < 200:
                break
            before = chunk[-1].id
        if len(out) > limit:
            return out[:limit], out[limit - 1]["job_id"]
        return out, None

    async def cancel(self, tenant: str, job_id: str, by: str | None) -> tuple[bool, str]:
        """Cancel a queued or running job: `(success, message)`."""
        _, row = await self.record(tenant, job_id)
        if row.status not in ("pending", "running"):
            return False, f"job {job_id} is already {cloud_status(row, None, 0)}"
        try:
            await self.orchestrator.command(job_id, cmd.Cancel(by=by, reason="cancelled via "
                                                                              "jobs/cancel"))
        except (Conflict, NotFound) as exc:
            return False, exc.message
        return True, f"job {job_id} is being cancelled"

    async def active_using(self, tenant: str, credential: str) -> list[str]:
        """Ids of queued or running jobs of `tenant` that were given `credential`."""
        ids = await self.store.active_job_ids()
        using: list[str] = []
        for job_id in ids:
            obj = await self.repo.get(JOB, job_id)
            if obj is not None and obj.tenant == tenant and credential in obj.data.get(
                    "credentials", ()):
                using.append(job_id)
        return using
