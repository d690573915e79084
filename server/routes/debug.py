"""`/api/jobs/{id}/debug-report`: the rule-based debug report of a failed job.

Thin: the job row, its steps and its artifacts folder go to `engine.debugreport`; the
failure email's `email_sent_at`, the `autofix_*` fields (engine.autorepair) and, with
`debug.llm`, the LLM's `llm_notes` (engine.debugllm) are added.
Links in the report are absolute (`?base=relative` keeps them as paths); `recording_url`
is a signed, expiring trace viewer link (server.recording_files), so it opens without
credentials.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from engine.cloud import DEFAULT_TENANT
from engine.debugreport import build_report
from engine.notify_email import sent_at
from server.errors import ORJSONResponse
from server.openapi import Endpoint, Param
from server.recording_files import signed_recording
from server.routes import runtime_of
from server.routes.jobs import get_row


async def debug_report(request: Request) -> Response:
    row = await get_row(request)
    runtime = runtime_of(request)
    steps = await runtime.store.get_steps(row.job_id)
    base = "" if request.query_params.get("base") == "relative" \
        else str(request.base_url).rstrip("/")
    report = build_report(row, steps, runtime.options.artifacts_dir / row.job_id, base_url=base,
                          step=request.query_params.get("step") or None,
                          recording=lambda job, step: signed_recording(request, job, step,
                                                                       base)[0])
    cloud = request.app.state.cloud
    report["email_sent_at"] = await sent_at(cloud.repo, row.job_id)
    report.update(await cloud.repair.report_fields(row.job_id))
    notes = request.app.state.browser_services.debug_notes
    return ORJSONResponse(await notes.add(report, DEFAULT_TENANT))


_REPORT = {"type": "object", "properties": {
    name: {"type": ["string", "null"]} for name in (
        "job_id", "debug_agent_status", "debug_agent_mode", "error", "tldr", "handoff_prompt",
        "screenshot_url", "dom_snapshot_url", "recording_url", "job_error", "job_workflow",
        "email_sent_at", "autofix_status", "autofix_summary", "autofix_deployment_id",
        "autofix_approval_job_id", "llm_notes", "llm_model", "llm_error")}}

ENDPOINTS = (
    Endpoint("GET", "/api/jobs/{id}/debug-report", debug_report,
             "Debug report of a failed job: diagnosis, handoff prompt, evidence links",
             (200, 404),
             query=(Param("base", "`relative` for links without scheme and host"),
                    Param("step", "The failed step to report on (default: the first)")),
             response=_REPORT, tag="jobs"),
)
