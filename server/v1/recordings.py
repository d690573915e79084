"""`/v1/recordings/get`: the recording (Playwright trace viewer link) of a job."""

from __future__ import annotations

from typing import Any

from engine.debugreport import recording_url
from engine.errors import Issue, ValidationFailed
from server.v1.envelope import Call, NotImplementedYet, opt_str, props, v1_route


async def get(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    job_id, session_id = opt_str(data, "job_id"), opt_str(data, "session_id")
    if (job_id is None) == (session_id is None):
        raise ValidationFailed(issues=[Issue(message="give exactly one of 'job_id' or "
                                                     "'session_id'", path="job_id")])
    if session_id is not None:
        raise NotImplementedYet("browser sessions are not available on this server yet")
    assert job_id is not None
    _, row = await call.cloud.jobs.record(call.tenant, job_id)
    root = call.cloud.runtime.options.artifacts_dir / row.job_id
    base = str(call.request.base_url).rstrip("/")
    for step in await call.cloud.jobs.store.get_steps(row.job_id):
        if (root / step.step_name / "trace.zip").is_file():
            return {"recording_url": recording_url(base, row.job_id, step.step_name),
                    "recording_url_expires_at": None}
    return {"recording_url": None, "recording_url_expires_at": None}


ENDPOINTS = (
    v1_route("recordings", "get", get, "The recording of a job's browser run (or null)",
             request=props(job_id="string", session_id="string"),
             response=props(recording_url=["string", "null"],
                            recording_url_expires_at=["string", "null"]),
             statuses=(200, 400)),
)
