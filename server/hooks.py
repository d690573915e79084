"""`/hooks/{name}`: inbound webhooks that start a trigger's task (DESIGN §8, §10).

`GET|POST /hooks/{name}` checks the secret (see `engine.triggers.webhooks`), then starts
the task: `mode: async` answers 202 `{job_id}`; `mode: sync` waits up to `timeout_secs`
and answers 200 `{job_id, status, output}`, or 202 `{job_id, status}` when the wait ran
out. A repeated delivery id answers with the first job. `GET
/hooks/{name}/jobs/{job_id}?wait=true&timeout=S` polls a job this hook started (with the
same credentials as the hook). Bodies are limited by the app's `limits.body`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.core.state import JobState
from engine.errors import Issue, NotFound, ValidationFailed
from engine.triggers.webhooks import (
    Delivery,
    Hook,
    delivery_id,
    find_hook,
    hook_secret,
    verify,
    webhook_input,
)
from server.errors import ORJSONResponse
from server.openapi import Endpoint, Param
from server.routes import path_param, runtime_of

MAX_WAIT = 300.0
DEFAULT_WAIT = 30.0


def _delivery(request: Request, body: bytes) -> Delivery:
    return Delivery(
        method=request.method,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=dict(request.query_params),
        body=body,
    )


def _authorized(request: Request, body: bytes) -> tuple[Hook, Delivery]:
    runtime = runtime_of(request)
    hook = find_hook(runtime.workspaces, path_param(request, "name"))
    delivery = _delivery(request, body)
    verify(hook_secret(runtime.workspaces, hook), delivery,
           now=runtime.orchestrator.clock.now(),
           allow_query_secret=hook.spec.allow_query_secret)
    return hook, delivery


def _result(state: JobState) -> dict[str, Any]:
    return {"job_id": state.job_id, "status": state.status.value, "output": state.output}


async def receive(request: Request) -> Response:
    body = await request.body()
    hook, delivery = _authorized(request, body)
    runtime = runtime_of(request)
    raw_input = webhook_input(runtime.workspaces, hook, delivery)
    delivered = delivery_id(delivery.headers)
    job_id = await runtime.orchestrator.create_job(
        hook.workspace, hook.spec.task, raw_input, source_type="webhook", source_id=hook.key,
        priority=hook.spec.priority,
        when_paused="skip" if hook.spec.concurrency == "skip" else "queue",
        idempotency_key=f"hook:{hook.name}:{delivered}" if delivered else None,
    )
    if hook.spec.mode == "sync":
        state = await runtime.orchestrator.wait(job_id, hook.spec.timeout_secs)
        if state.terminal:
            return ORJSONResponse(_result(state))
        return ORJSONResponse({"job_id": job_id, "status": state.status.value},
                              status_code=202)
    return ORJSONResponse({"job_id": job_id}, status_code=202)


def _timeout(request: Request) -> float:
    raw = request.query_params.get("timeout")
    if raw is None or raw == "":
        return DEFAULT_WAIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value:
        raise ValidationFailed(issues=[Issue(
            message=f"'timeout' must be a non-negative number of seconds, got {raw!r}",
            path="timeout")])
    return min(value, MAX_WAIT)


async def poll_job(request: Request) -> Response:
    hook, _ = _authorized(request, b"")
    runtime = runtime_of(request)
    job_id = path_param(request, "job_id")
    state = await runtime.orchestrator.get_state(job_id)
    if state.source_id != hook.key or state.source_type != "webhook":
        raise NotFound(f"job {job_id!r} was not started by webhook {hook.name!r}")
    if request.query_params.get("wait", "").lower() in ("1", "true", "yes"):
        state = await runtime.orchestrator.wait(job_id, _timeout(request))
    return ORJSONResponse(_result(state))


_ACCEPTED = {"type": "object", "properties": {
    "job_id": {"type": "string"}, "status": {"type": "string"}, "output": {},
}}
# Also 202 (async, or a sync wait that ran out), 400 (input the task refuses), 401 (bad
# signature) and 409 (workspace does not load); listed in docs/triggers.md, while the
# document lists what any caller can reach (tests/api/test_api_ops.py checks that).
_STATUSES = (200, 404, 413)
_HEADERS = ("X-Hub-Signature-256", "webhook-id", "webhook-timestamp", "webhook-signature",
            "Idempotency-Key", "X-GitHub-Delivery")

ENDPOINTS = (
    Endpoint("POST", "/hooks/{name}", receive, "Deliver a webhook: start its task",
             _STATUSES, body={}, response=_ACCEPTED, headers=_HEADERS, tag="hooks"),
    Endpoint("GET", "/hooks/{name}", receive, "Deliver a webhook: start its task",
             (200, 404), response=_ACCEPTED, headers=_HEADERS, tag="hooks"),
    Endpoint("GET", "/hooks/{name}/jobs/{job_id}", poll_job,
             "A job this webhook started (optionally wait for its end)", (200, 404),
             query=(Param("wait", "wait until the job ends", {"type": "boolean"}),
                    Param("timeout", "seconds to wait at most (default 30)",
                          {"type": "number"})),
             response=_ACCEPTED, tag="hooks"),
)
