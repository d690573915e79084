"""`/v1/jobs/*`: create, list, get, cancel and the debug report of cloud jobs."""

from __future__ import annotations

from typing import Any

from engine.cloudjobs import DEFAULT_TIMEOUT, MAX_TIMEOUT, STATUSES, JobRequest
from engine.debugllm import DebugNotes
from engine.debugreport import build_report
from engine.errors import InputInvalid, Issue, ValidationFailed
from engine.notify_email import sent_at
from server.recording_files import signed_recording
from server.v1.envelope import (
    Call,
    opt_bool,
    opt_int,
    opt_obj,
    opt_str,
    props,
    required_str,
    v1_route,
)

LOG_TAIL = 50


async def create(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    workflow = required_str(data, "workflow")
    params = opt_obj(data, "params") or {}
    nonce = data.get("nonce")
    if nonce is not None and not isinstance(nonce, str | int):
        raise ValidationFailed(issues=[Issue(message="'nonce' must be a string", path="nonce")])
    req = JobRequest(
        workflow=workflow, params=params, nonce=str(nonce) if nonce is not None else None,
        timeout_seconds=opt_int(data, "timeout_seconds", DEFAULT_TIMEOUT, low=1,
                                high=MAX_TIMEOUT) or DEFAULT_TIMEOUT,
        callback_url=opt_str(data, "callback_url"),
        callback_secret=opt_str(data, "callback_secret"),
        skip_callbacks=bool(opt_bool(data, "skip_callbacks", False)), by=call.by)
    if req.callback_url is not None:
        from engine.callbacks import check_url

        check_url(req.callback_url, "callback_url")
    try:
        job_id, repeat = await call.cloud.jobs.create(call.tenant, req)
    except InputInvalid as exc:
        raise InputInvalid("params do not match the workflow's input schema", issues=[
            Issue(message=i.message, path=f"params.{i.path}" if i.path else "params",
                  hint=i.hint) for i in exc.issues]) from None
    message = (f"a job with nonce {req.nonce!r} exists; returning it" if repeat
               else f"job {job_id} started")
    return {"success": True, "job_id": job_id, "status": "running", "message": message}


async def list_jobs(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    status = opt_str(data, "status")
    if status is not None and status not in STATUSES:
        raise ValidationFailed(issues=[Issue(
            message=f"'status' must be one of {', '.join(STATUSES)}", path="status")])
    limit = opt_int(data, "limit", 20, low=1, high=100) or 20
    jobs, cursor = await call.cloud.jobs.page(call.tenant, status=status, limit=limit,
                                              cursor=opt_str(data, "cursor"))
    return {"jobs": jobs, "next_cursor": cursor}


async def get(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    obj, row = await call.cloud.jobs.record(call.tenant, required_str(data, "id"))
    return await call.cloud.jobs.detail(obj, row)


async def cancel(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    ok, message = await call.cloud.jobs.cancel(call.tenant, required_str(data, "id"), call.by)
    return {"success": ok, "message": message}


async def debug_report(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    jobs = call.cloud.jobs
    obj, row = await jobs.record(call.tenant, required_str(data, "id"))
    steps = await jobs.store.get_steps(row.job_id)
    runtime = call.cloud.runtime
    base = str(call.request.base_url).rstrip("/")
    report = build_report(row, steps, runtime.options.artifacts_dir / row.job_id, base_url=base,
                          recording=lambda job, step: signed_recording(call.request, job,
                                                                       step, base)[0])
    detail = await jobs.detail(obj, row)
    failed = report.get("failed_step") or (detail["mapped_stack"] or {}).get("step")
    lines = []
    if failed:
        found = await runtime.logs.read(row.job_id, step=failed)
        lines = [x.line for x in found[-LOG_TAIL:]]
    report.update({
        "job_id": row.job_id, "job_error": detail["error"],
        "job_mapped_stack": report.get("job_mapped_stack") or detail["mapped_stack"],
        "job_params": detail["params"], "job_workflow": detail["workflow"],
        "failed_step_logs": lines, "analysis": report.get("analysis"),
        "email_sent_at": await sent_at(call.cloud.repo, row.job_id),
        **await call.cloud.repair.report_fields(row.job_id),
    })
    if report.get("handoff_prompt") and lines:
        report["handoff_prompt"] += "\n\nLast log lines of the failing step:\n" + "\n".join(
            f"  {x}" for x in lines[-20:])
    # The reference's two modes: `autofix` once auto-repair has worked on the job.
    report["debug_agent_mode"] = "debug" if report.get("autofix_status") in (
        None, "not_configured") else "autofix"
    notes: DebugNotes = call.request.app.state.browser_services.debug_notes
    return await notes.add(report, call.tenant)


_JOB = props(job_id="string", deployment_id="string", workflow_id="string", workflow="string",
             status="string", created_at="string", completed_at=["string", "null"])

ENDPOINTS = (
    v1_route("jobs", "create", create, "Start a workflow job",
             request=props(workflow="string", params="object", nonce="string",
                           timeout_seconds="integer", callback_url="string",
                           callback_secret="string", skip_callbacks="boolean"),
             response=props(success="boolean", job_id="string", status="string",
                            message="string")),
    v1_route("jobs", "list", list_jobs, "List the tenant's jobs, newest first",
             request=props(status="string", limit="integer", cursor="string"),
             response=props(jobs={"type": "array", "items": _JOB},
                            next_cursor=["string", "null"])),
    v1_route("jobs", "get", get, "A job with its result, error and mapped stack",
             request=props(id="string"), response=props(
                 job_id="string", deployment_id="string", deployment_version="string",
                 workflow_id="string", workflow="string", params="object", status="string",
                 created_at="string", started_at=["string", "null"],
                 completed_at=["string", "null"], result=["object", "null"],
                 error=["string", "null"], mapped_stack=["object", "null"],
                 recording_url=["string", "null"])),
    v1_route("jobs", "cancel", cancel, "Cancel a queued or running job",
             request=props(id="string"), response=props(success="boolean", message="string")),
    v1_route("jobs", "debugReport", debug_report, "The debug report of a failed job",
             request=props(id="string"), response=props(
                 job_id="string", debug_agent_status="string", debug_agent_mode="string",
                 error=["string", "null"], tldr=["string", "null"],
                 handoff_prompt=["string", "null"], email_sent_at=["string", "null"],
                 autofix_status=["string", "null"], autofix_summary=["string", "null"],
                 autofix_deployment_id=["string", "null"],
                 autofix_approval_job_id=["string", "null"], llm_notes=["string", "null"],
                 llm_model="string", llm_error=["string", "null"])),
)
