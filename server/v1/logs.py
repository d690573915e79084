"""`/v1/logs/list`: log lines of one job or of the tenant's recent jobs (camelCase)."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from engine.cloudjobs import JOB
from engine.errors import Issue, ValidationFailed
from engine.logs.model import LogLine
from engine.views import iso
from server.v1.envelope import Call, opt_int, opt_str, props, v1_route

LEVELS = ("info", "warn", "error")
RECENT_JOBS = 20
_WARN = ("retry", "cancel", "timed out", "lost", "warning", "skipped")


def level_of(line: LogLine) -> str:
    """stderr lines and failures are `error`, `_server` warnings `warn`, the rest `info`."""
    if line.stream == "stderr":
        return "error"
    if line.step == "_server":
        text = line.line.lower()
        if "failed" in text or "error" in text:
            return "error"
        if any(word in text for word in _WARN):
            return "warn"
    return "info"


def _token(jobs: list[str], after: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"jobs": jobs, "after": after})).decode()


def _untoken(token: str) -> tuple[list[str], int]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return [str(j) for j in data["jobs"]], int(data["after"])
    except Exception:
        raise ValidationFailed(issues=[Issue(message="'pageToken' is not a token this server "
                                                     "issued", path="pageToken")]) from None


async def list_logs(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    job_id = opt_str(data, "jobId")
    workflow = opt_str(data, "workflow")
    level = opt_str(data, "level")
    if level is not None and level not in LEVELS:
        raise ValidationFailed(issues=[Issue(message="'level' must be info, warn or error",
                                             path="level")])
    limit = opt_int(data, "limit", 100, low=1, high=1000) or 100
    token = opt_str(data, "pageToken")
    repo = call.cloud.repo
    if token:
        jobs, after = _untoken(token)
    elif job_id:
        await call.cloud.jobs.record(call.tenant, job_id)
        jobs, after = [job_id], 0
    else:
        page = await repo.page(JOB, call.tenant, limit=RECENT_JOBS * 5)
        jobs = [o.id for o in page if workflow is None or o.data["workflow"] == workflow]
        jobs, after = jobs[:RECENT_JOBS], 0
    out: list[dict[str, Any]] = []
    logs = call.cloud.runtime.logs
    while jobs and len(out) < limit:
        current = jobs[0]
        obj = await repo.get(JOB, current)
        if obj is None or obj.tenant != call.tenant or (
                workflow is not None and obj.data["workflow"] != workflow):
            jobs, after = jobs[1:], 0
            continue
        lines = await logs.read(current, after=after, limit=1000)
        if not lines:
            jobs, after = jobs[1:], 0
            continue
        for line in lines:
            after = line.seq
            lvl = level_of(line)
            if level is not None and lvl != level:
                continue
            out.append({"jobId": current, "workflow": obj.data["workflow"], "level": lvl,
                        "message": line.line, "timestamp": iso(line.ts), "step": line.step,
                        "stream": line.stream})
            if len(out) >= limit:
                break
    more = bool(jobs)
    return {"logs": out, "nextPageToken": _token(jobs, after) if more else None}


_LOG = props(jobId="string", workflow="string", level="string", message="string",
             timestamp="string")

ENDPOINTS = (
    v1_route("logs", "list", list_logs, "Log lines of a job or of the tenant's recent jobs",
             request=props(jobId="string", workflow="string", level="string",
                           pageToken="string", limit="integer"),
             response=props(logs={"type": "array", "items": _LOG},
                            nextPageToken=["string", "null"])),
)
