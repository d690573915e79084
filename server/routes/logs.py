"""`/api/jobs/{id}/logs`: a job's (or one step's) log as `{"logs": "<JSONL>"}`."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import Response

from engine.errors import NotFound
from engine.logs.model import SERVER_STEP, LogLine
from server.errors import ORJSONResponse
from server.openapi import Endpoint, Param
from server.routes import path_param, runtime_of
from server.routes.jobs import get_row
from server.ws import logs_stream

_LOGS = {"type": "object", "properties": {"logs": {"type": "string"}}}


def jsonl(lines: Sequence[LogLine]) -> str:
    """The reference's JSONL text: one object per line, each ending in a newline."""
    return "".join(line.to_json().decode() + "\n" for line in lines)


async def job_logs(request: Request) -> Response:
    row = await get_row(request)
    lines = await runtime_of(request).logs.read(row.job_id)
    return ORJSONResponse({"logs": jsonl(lines)})


async def step_logs(request: Request) -> Response:
    row = await get_row(request)
    step = path_param(request, "step")
    runtime = runtime_of(request)
    if step != SERVER_STEP:
        steps = await runtime.store.get_steps(row.job_id)
        if not any(s.step_name == step for s in steps):
            raise NotFound(f"job {row.job_id} has no step {step!r}")
    lines = await runtime.logs.read(row.job_id, step=step)
    return ORJSONResponse({"logs": jsonl(lines)})


ENDPOINTS = (
    Endpoint("GET", "/api/jobs/{id}/logs", job_logs, "The job's combined log (JSONL)",
             (200, 404), response=_LOGS, tag="logs"),
    Endpoint("GET", "/api/jobs/{id}/steps/{step}/logs", step_logs,
             "One step's log (JSONL); `_server` holds the engine's notes", (200, 404),
             response=_LOGS, tag="logs"),
    Endpoint("WEBSOCKET", "/api/jobs/{id}/logs/stream", logs_stream,
             "Live log stream (WebSocket): backfill, then live lines; see docs/api.md",
             (101,), query=(
                 Param("step", "Only this step's lines (and its status frames)"),
                 Param("after", "Resume after this cursor (`<log_seq>.<event_version>`)"),
                 Param("format", "`jsonl` (default) or `events` (typed frames)",
                       {"type": "string", "enum": ["jsonl", "events"]}),
             ), tag="logs"),
)
