"""Handlers of `/v1/sessions/*` over engine.sessions, for server/v1/sessions.py to route.

`create`, `get`, `close` and `list` (a Partitur addition: the reference has no session
list) take `(call, data)` like every `/v1` handler; `ENDPOINTS` is the drop-in
replacement of the 501 stubs.
"""

from __future__ import annotations

from typing import Any

from engine.errors import Issue, ValidationFailed
from engine.recordings import find_recording, recording_link
from engine.sessions import (
    CLOSED,
    MAX_TIMEOUT,
    RUNNING,
    Session,
    SessionManager,
    live_view_path,
)
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


def _manager(call: Call) -> SessionManager:
    manager: SessionManager = call.request.app.state.sessions
    return manager


def _view(call: Call, session: Session) -> dict[str, Any]:
    base = str(call.request.base_url).rstrip("/")
    live = base + live_view_path(call.request.app.state.recording_signer, session)
    return session.view(live)


async def create(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    session = await _manager(call).create(
        call.tenant, timeout_seconds=opt_int(data, "timeout_seconds", None, low=1,
                                             high=MAX_TIMEOUT),
        start_url=opt_str(data, "start_url"), viewport=opt_obj(data, "viewport"),
        headless=bool(opt_bool(data, "headless", True)))
    return _view(call, session)


async def get(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    return _view(call, _manager(call).get(call.tenant, required_str(data, "session_id")))


async def close(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    session = await _manager(call).close(call.tenant, required_str(data, "session_id"))
    return {**_view(call, session), "success": True}


async def list_sessions(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    """`sessions/list`: the tenant's sessions, newest first, optionally by `status`."""
    status = opt_str(data, "status")
    if status not in (None, RUNNING, CLOSED):
        raise ValidationFailed(issues=[Issue(message=f"'status' must be {RUNNING!r} or "
                                                     f"{CLOSED!r}", path="status")])
    return {"sessions": [_view(call, s) for s in _manager(call).of_tenant(call.tenant, status)]}


async def recording(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    """`recordings/get`: a signed, expiring trace viewer link for a job (or null).

    A session records nothing, so a `session_id` of the tenant answers nulls.
    """
    job_id, session_id = opt_str(data, "job_id"), opt_str(data, "session_id")
    if (job_id is None) == (session_id is None):
        raise ValidationFailed(issues=[Issue(message="give exactly one of 'job_id' or "
                                                     "'session_id'", path="job_id")])
    if session_id is not None:
        _manager(call).get(call.tenant, session_id)
        return {"recording_url": None, "recording_url_expires_at": None}
    assert job_id is not None
    _, row = await call.cloud.jobs.record(call.tenant, job_id)
    services = call.request.app.state.browser_services
    steps = [s.step_name for s in await call.cloud.jobs.store.get_steps(row.job_id)]
    step = find_recording(call.cloud.runtime.options.artifacts_dir / row.job_id, steps)
    if step is None:
        return {"recording_url": None, "recording_url_expires_at": None}
    url, expires_at = recording_link(services.signer, str(call.request.base_url), row.job_id,
                                     step, ttl=services.url_ttl)
    return {"recording_url": url, "recording_url_expires_at": expires_at}


async def telemetry(call: Call, data: dict[str, Any]) -> dict[str, Any]:
    return {"success": True}


_SESSION = props(session_id="string", status="string", cdp_url=["string", "null"],
                 live_view_url=["string", "null"], created_at="string", expires_at="string",
                 closed_at=["string", "null"], close_reason=["string", "null"])

ENDPOINTS = (
    v1_route("sessions", "create", create, "Launch a browser session (CDP URL, live view)",
             request=props(timeout_seconds="integer", start_url="string", viewport="object",
                           headless="boolean"), response=_SESSION, statuses=(200, 400, 429)),
    v1_route("sessions", "get", get, "A browser session", request=props(session_id="string"),
             response=_SESSION, statuses=(200, 400)),
    v1_route("sessions", "close", close, "Close a browser session and kill its browser",
             request=props(session_id="string"), response=_SESSION, statuses=(200, 400)),
    v1_route("sessions", "list", list_sessions,
             "The caller's browser sessions, newest first (closed ones for an hour)",
             request=props(status={"enum": [RUNNING, CLOSED]}),
             response=props(sessions={"type": "array", "items": _SESSION}),
             statuses=(200, 400)),
    v1_route("recordings", "get", recording, "A signed, expiring link to a job's recording",
             request=props(job_id="string", session_id="string"),
             response=props(recording_url=["string", "null"],
                            recording_url_expires_at=["string", "null"]),
             statuses=(200, 400)),
    v1_route("telemetry", "recordCliEvent", telemetry, "Accepted and ignored",
             statuses=(200, 400)),
)
