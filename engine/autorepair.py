"""Auto-repair as a proposal: a repair task proposes a deployment, a person approves it.

A deployment created with `auto_repair: true` asks for repair when one of its jobs fails.
With `debug.repair_task` (`workspace/task`) configured, `AutoRepair` then:

1. claims the failed job (a `autorepair` record, id = the failed job id, so once) and runs
   the repair task with the inputs it declares among `job_id`, `workflow`,
   `deployment_id`, `error`, `tldr`, `handoff_prompt` and `source` (the failing
   deployment's workspace as a base64 gzip tarball);
2. reads the proposal from the repair job's output — the first object with a `summary`
   and/or a `source` (a base64 gzip tarball of the fixed workspace), at the top or in a
   leaf step's output;
3. with a `source`, starts a one-step **approval** job (source type
   `autorepair-approval`, step `approve`) in the repair task's workspace. Nothing is
   deployed before it is approved: the running deployment keeps serving the workflow;
4. once approved, creates the new deployment (`Deployments.create`); it serves the
   workflow as soon as its build is ready. A rejection, or a repair job that fails,
   ends the attempt.

The steps run on job events (`listener`); `catch_up()` finishes, after a restart,
attempts whose repair or approval job ended while no listener ran. `report_fields`
answers the debug report's `autofix_*` fields.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.clock import Clock, SystemClock
from engine.core import events as ev
from engine.core.plan import Plan, PlanStep
from engine.core.state import JobState
from engine.debugreport import build_report
from engine.deployments import DEPLOYMENT, Deployments
from engine.errors import Conflict, NotFound, PartiturError
from engine.model import ActionSpec
from engine.orchestrator import Orchestrator
from engine.store.cloud import CloudObject, CloudRepository

log = logging.getLogger("partitur.autorepair")

REPAIR = "autorepair"
CLOUD_SOURCE = "cloud"
REPAIR_SOURCE = "autorepair"
APPROVAL_SOURCE = "autorepair-approval"
APPROVAL_TASK = "autorepair:approve"
APPROVAL_STEP = "approve"
REPAIRING, NO_PROPOSAL, REPAIR_FAILED = "repairing", "no_proposal", "repair_failed"
AWAITING_APPROVAL, DEPLOYED, REJECTED = "awaiting_approval", "deployed", "rejected"
NOT_CONFIGURED = ("Auto-repair is not configured on this server (set debug.repair_task to "
                  "a workspace task).")
REPAIR_INPUTS = ("job_id", "workflow", "deployment_id", "error", "tldr", "handoff_prompt",
                 "source")
_ENDS = (ev.JobCompleted, ev.JobFailed, ev.JobCancelled)


def pack_folder(folder: Path) -> str:
    """A base64 gzip tarball of `folder` (members `./…`), as `deployments/create` takes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname="./" + path.relative_to(folder).as_posix())
    return base64.b64encode(buf.getvalue()).decode()


def find_proposal(output: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The proposal in a repair job's output: `{summary, source}` at the top or in a leaf."""
    if not output:
        return None
    candidates = [output, *(v for v in output.values() if isinstance(v, Mapping))]
    for candidate in candidates:
        if "source" in candidate or "summary" in candidate:
            source = candidate.get("source")
            summary = candidate.get("summary")
            return {"source": source if isinstance(source, str) and source else None,
                    "summary": str(summary) if summary is not None else None}
    return None


def approval_plan(message: str) -> Plan:
    """The one-step plan whose approval deploys a proposal."""
    action = ActionSpec(type="approval", message=message)
    step = PlanStep(name=APPROVAL_STEP, action_name=APPROVAL_STEP, action_type="approval",
                    action=action.model_dump(mode="json"))
    return Plan(task=APPROVAL_TASK, steps={APPROVAL_STEP: step})


class AutoRepair:
    """Runs the repair task after failures of `auto_repair` deployments; see the module."""

    def __init__(self, repo: CloudRepository, orchestrator: Orchestrator,
                 deployments: Deployments, repair_task: str | None, artifacts_dir: Path, *,
                 clock: Clock | None = None) -> None:
        self.repo = repo
        self.artifacts_dir = artifacts_dir
        self.orchestrator = orchestrator
        self.deployments = deployments
        self.repair_task = repair_task or None
        self.clock: Clock = clock or SystemClock()
        self._lock = asyncio.Lock()
        self._pending: set[asyncio.Task[Any]] = set()

    @property
    def configured(self) -> bool:
        return self.repair_task is not None

    # --- events ------------------------------------------------------------------------

    def listener(self, state: JobState, events: Sequence[ev.Event]) -> None:
        """`Orchestrator.on_events`: react to failed cloud jobs and ended repair jobs."""
        if not self.configured or not any(isinstance(e, _ENDS) for e in events):
            return
        if state.source_type == CLOUD_SOURCE and any(isinstance(e, ev.JobFailed)
                                                     for e in events):
            self._spawn(self.on_failure(state.job_id))
        elif state.source_type == REPAIR_SOURCE and state.source_id:
            self._spawn(self.on_repair_end(state.source_id, state.job_id, state.status.value,
                                           state.output, state.error))
        elif state.source_type == APPROVAL_SOURCE and state.source_id:
            self._spawn(self.on_approval_end(state.source_id, state.status.value,
                                             state.error))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the transitions in flight (shutdown, tests)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        for task in list(self._pending):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _save(self, record: CloudObject, **fields: Any) -> CloudObject:
        return await self.repo.merge(record, self.clock.now(), **fields)

    # --- 1. a failure: run the repair task -----------------------------------------------

    async def on_failure(self, job_id: str) -> None:
        """Start the repair of the failed cloud job `job_id` if its deployment asks for it."""
        assert self.repair_task is not None
        job = await self.repo.get("job", job_id)
        if job is None:
            return
        dep = await self.repo.get(DEPLOYMENT, str(job.data.get("deployment_id")))
        if dep is None or not dep.data.get("auto_repair"):
            return
        now = self.clock.now()
        record = CloudObject(REPAIR, job_id, job.tenant, now, now, {
            "status": REPAIRING, "workflow": job.data.get("workflow"),
            "deployment_id": dep.id, "repair_task": self.repair_task, "repair_job_id": None,
            "approval_job_id": None, "summary": None, "autofix_deployment_id": None,
            "error": None, "source": None})
        try:
            await self.repo.insert(record)
        except Conflict:
            return  # already claimed
        async with self._lock:
            try:
                repair_job = await self._start_repair(job_id, job, dep)
            except PartiturError as exc:
                await self._save(record, status=REPAIR_FAILED,
                                 error=f"the repair task could not start: {exc.message}")
                return
            current = await self.repo.get(REPAIR, job_id)
            if current is not None and current.data.get("repair_job_id") is None:
                await self._save(current, repair_job_id=repair_job)

    async def _start_repair(self, job_id: str, job: CloudObject, dep: CloudObject) -> str:
        assert self.repair_task is not None
        workspace, _, task = self.repair_task.partition("/")
        loaded = self.orchestrator.workspaces.get(workspace).require()
        spec = loaded.spec.tasks.get(task)
        if spec is None:
            raise NotFound(f"repair task {self.repair_task!r} not found")
        row = await self.orchestrator.store.get_job(job_id)
        steps = await self.orchestrator.store.get_steps(job_id)
        report: dict[str, Any] = {}
        if row is not None:
            report = build_report(row, steps, self.artifacts_dir / job_id)
        values: dict[str, Any] = {
            "job_id": job_id, "workflow": job.data.get("workflow"), "deployment_id": dep.id,
            "error": row.error if row is not None else None, "tldr": report.get("tldr"),
            "handoff_prompt": report.get("handoff_prompt")}
        if "source" in spec.input:
            values["source"] = await asyncio.to_thread(pack_folder,
                                                       Path(dep.data["source_path"]))
        given = {k: v for k, v in values.items() if k in spec.input and v is not None}
        return await self.orchestrator.create_job(
            workspace, task, given, source_type=REPAIR_SOURCE, source_id=job_id,
            idempotency_key=f"autorepair:{job_id}")

    # --- 2. the repair job ended: propose -------------------------------------------------

    async def on_repair_end(self, failed_job: str, repair_job: str, status: str,
                            output: Mapping[str, Any] | None, error: str | None) -> None:
        """Record the repair job's proposal and, with a source, ask for approval."""
        async with self._lock:
            record = await self.repo.get(REPAIR, failed_job)
            if record is None or record.data.get("status") != REPAIRING:
                return
            record = await self._save(record, repair_job_id=repair_job)
            if status != "completed":
                await self._save(record, status=REPAIR_FAILED,
                                 error=f"the repair job {repair_job} {status}: {error or ''}"
                                 .rstrip(": "))
                return
            proposal = find_proposal(output)
            if proposal is None or proposal["source"] is None:
                summary = (proposal or {}).get("summary") or "The repair task proposed no change."
                await self._save(record, status=NO_PROPOSAL, summary=summary)
                return
            summary = proposal["summary"] or "The repair task proposed a new deployment."
            workspace = str(self.repair_task).partition("/")[0]
            message = (f"Deploy the repair of workflow {record.data.get('workflow')!r} "
                       f"(failed job {failed_job})? {summary}")
            try:
                approval = await self.orchestrator.create_job(
                    workspace, APPROVAL_TASK,
                    {"failed_job_id": failed_job, "workflow": record.data.get("workflow"),
                     "summary": summary, "repair_job_id": repair_job},
                    adhoc=approval_plan(message), source_type=APPROVAL_SOURCE,
                    source_id=failed_job, idempotency_key=f"autorepair-approval:{failed_job}")
            except PartiturError as exc:
                await self._save(record, status=REPAIR_FAILED, summary=summary,
                                 error=f"the approval step could not start: {exc.message}")
                return
            await self._save(record, status=AWAITING_APPROVAL, summary=summary,
                             source=proposal["source"], approval_job_id=approval)

    # --- 3. the approval ended: deploy ------------------------------------------------

    async def on_approval_end(self, failed_job: str, status: str, error: str | None) -> None:
        """Deploy an approved proposal; a rejected one is only recorded."""
        async with self._lock:
            record = await self.repo.get(REPAIR, failed_job)
            if record is None or record.data.get("status") != AWAITING_APPROVAL:
                return
            if status != "completed":
                await self._save(record, status=REJECTED, source=None,
                                 error=error or f"the approval job {status}")
                return
            try:
                dep = await self.deployments.create(
                    record.tenant, str(record.data["source"]),
                    description=f"auto-repair of job {failed_job}: {record.data.get('summary')}",
                    auto_repair=True)
            except PartiturError as exc:
                await self._save(record, status=REPAIR_FAILED, source=None,
                                 error=f"the proposed deployment was refused: {exc.message}")
                return
            await self._save(record, status=DEPLOYED, source=None,
                             autofix_deployment_id=dep.id)

    async def catch_up(self) -> int:
        """Finish attempts whose repair or approval job ended unseen; how many moved."""
        if not self.configured:
            return 0
        moved = 0
        for record in await self.repo.all(REPAIR, None):
            status = record.data.get("status")
            key = {REPAIRING: "repair_job_id", AWAITING_APPROVAL: "approval_job_id"}.get(
                str(status))
            job_id = record.data.get(key) if key else None
            row = await self.orchestrator.store.get_job(str(job_id)) if job_id else None
            if row is None or row.status not in ("completed", "failed", "cancelled"):
                continue
            if status == REPAIRING:
                await self.on_repair_end(record.id, row.job_id, row.status,
                                         dict(row.output) if row.output else None, row.error)
            else:
                await self.on_approval_end(record.id, row.status, row.error)
            moved += 1
        return moved

    # --- the report --------------------------------------------------------------------

    async def report_fields(self, job_id: str) -> dict[str, Any]:
        """The debug report's `autofix_*` fields of `job_id`."""
        record = await self.repo.get(REPAIR, job_id)
        if record is None:
            summary = NOT_CONFIGURED if not self.configured else None
            if summary is None:
                job = await self.repo.get("job", job_id)
                dep = await self.repo.get(DEPLOYMENT, str(job.data.get("deployment_id"))) \
                    if job is not None else None
                if dep is not None and not dep.data.get("auto_repair"):
                    summary = "Auto-repair is off for this deployment (auto_repair: false)."
            return {"autofix_status": "not_configured" if not self.configured else None,
                    "autofix_summary": summary, "autofix_deployment_id": None,
                    "autofix_repair_job_id": None, "autofix_approval_job_id": None,
                    "autofix_error": None}
        d = record.data
        return {"autofix_status": d.get("status"), "autofix_summary": d.get("summary"),
                "autofix_deployment_id": d.get("autofix_deployment_id"),
                "autofix_repair_job_id": d.get("repair_job_id"),
                "autofix_approval_job_id": d.get("approval_job_id"),
                "autofix_error": d.get("error")}
