"""Conformance with the reference pages (shared/reference/libretto-*.md, cloud-api-notes.md).

Walks every route the pages name and checks that each response field they list is
present with the right JSON type: the list a reviewer would tick.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from receiver import Receiver, close
from v1_helpers import call, deploy, wait_job

S, N, B, INT, OBJ, A = "string", "null", "boolean", "integer", "object", "array"
TYPES: dict[str, type | tuple[type, ...]] = {S: str, B: bool, INT: int, OBJ: dict, A: list,
                                             N: type(None)}

DEPLOYMENT = {"id": S, "description": (S, N), "status": S, "source_path": (S, N),
              "bundle_path": (S, N), "build_error": (S, N), "entry_point": (S, N),
              "built_at": (S, N), "created_at": S, "workflows": A}
JOB_ENTRY = {"job_id": S, "deployment_id": S, "workflow_id": S, "workflow": S, "status": S,
             "created_at": S, "completed_at": (S, N)}
JOB = {"job_id": S, "deployment_id": S, "deployment_version": S, "workflow_id": S,
       "workflow": S, "params": OBJ, "status": S, "created_at": S, "started_at": (S, N),
       "completed_at": (S, N), "result": (OBJ, N), "error": (S, N), "mapped_stack": (OBJ, N),
       "recording_url": (S, N), "hosted_workflow_id": N, "live_view_url": (S, N)}
DEBUG = {"job_id": S, "debug_agent_status": S, "debug_agent_mode": S, "error": (S, N),
         "tldr": (S, N), "handoff_prompt": (S, N), "screenshot_url": (S, N),
         "dom_snapshot_url": (S, N), "recording_url": (S, N), "autofix_summary": (S, N),
         "autofix_deployment_id": (S, N), "email_sent_at": (S, N), "job_error": (S, N),
         "job_mapped_stack": (OBJ, N), "job_params": OBJ, "job_workflow": S}
LOG = {"jobId": S, "workflow": S, "level": S, "message": S, "timestamp": S}
SCHEDULE = {"id": S, "workflow": S, "params": OBJ, "cron_expr": S, "timezone": S,
            "timeout_seconds": INT, "callback_url": (S, N), "skip_callbacks": B, "enabled": B,
            "next_fire_at": (S, N), "last_fire_at": (S, N), "last_job_id": (S, N),
            "last_error": (S, N), "consecutive_failures": INT, "created_at": S, "updated_at": S}
DEPLOYED = {"name": S, "deployment_id": S, "deployment_status": S, "created_at": S,
            "updated_at": S}
WORKFLOW = {"workflow": S, "deployment_id": S, "deployment_status": S,
            "deployment_created_at": S, "deployment_built_at": (S, N), "created_at": S,
            "updated_at": S, "input_schema": OBJ, "output_schema": OBJ}
SESSION = {"session_id": S, "status": S, "cdp_url": (S, N), "live_view_url": (S, N),
           "created_at": S, "expires_at": S, "closed_at": (S, N)}
BUILD = {"build_id": S, "status": S, "deployment_id": (S, N), "workflow_name": (S, N),
         "summary": (S, N), "error": (S, N), "details": OBJ, "attempted_steps": A,
         "created_at": S, "updated_at": S}
STATUSES = {"queued", "starting_browser", "running", "completed", "failed", "cancelled"}


def check(where: str, value: Any, fields: dict[str, Any]) -> None:
    assert isinstance(value, dict), f"{where}: not an object"
    for name, kinds in fields.items():
        assert name in value, f"{where}: field {name!r} is missing"
        allowed = tuple(TYPES[k] for k in ((kinds,) if isinstance(kinds, str) else kinds))
        ok = isinstance(value[name], allowed) and not (
            isinstance(value[name], bool) and bool not in allowed)
        assert ok, f"{where}.{name}: {value[name]!r} is not {kinds}"


def test_every_route_and_field(v1: httpx.Client) -> None:
    # deployments/create, sync, list
    created = call(v1, "deployments/create", {"source": _source(), "description": "c"})
    check("deployments/create", created, {"deployment_id": S, "status": S, "created_at": S})
    assert created["status"] == "building"
    dep = deploy(v1)
    check("deployments/sync", dep, DEPLOYMENT)
    assert all(isinstance(w, str) for w in dep["workflows"])
    for d in call(v1, "deployments/list")["deployments"]:
        check("deployments/list[]", d, DEPLOYMENT)
    # workflows/list, get, delete
    listed = call(v1, "workflows/list")
    check("workflows/list", listed, {"deployed_workflows": A, "in_progress_builds": A})
    for w in listed["deployed_workflows"]:
        check("workflows/list.deployed_workflows[]", w, DEPLOYED)
    check("workflows/get", call(v1, "workflows/get", {"workflow": "greet"}), WORKFLOW)
    check("workflows/delete", call(v1, "workflows/delete", {"workflow": "nope"}),
          {"success": B, "message": S})
    # jobs/create, get, list, cancel, debugReport
    made = call(v1, "jobs/create", {"workflow": "boom", "params": {}})
    check("jobs/create", made, {"success": B, "job_id": S, "status": S, "message": S})
    job = wait_job(v1, made["job_id"])
    check("jobs/get", job, JOB)
    assert job["status"] in STATUSES
    page = call(v1, "jobs/list", {"limit": 5})
    check("jobs/list", page, {"jobs": A, "next_cursor": (S, N)})
    for entry in page["jobs"]:
        check("jobs/list.jobs[]", entry, JOB_ENTRY)
        assert entry["status"] in STATUSES
    check("jobs/cancel", call(v1, "jobs/cancel", {"id": made["job_id"]}),
          {"success": B, "message": S})
    check("jobs/debugReport", call(v1, "jobs/debugReport", {"id": made["job_id"]}), DEBUG)
    # workflows/build without an action log, and no LLM configured: a build that fails
    # and says why.
    built = call(v1, "workflows/build", {"descriptions": ["Sign in and read the orders"],
                                          "initial_url": "http://127.0.0.1:9/"})
    check("workflows/build", built, {"build_id": S, "status": S})
    assert built["status"] in ("pending", "agent_running")
    for _ in range(100):
        status = call(v1, "workflows/buildStatus", {"build_id": built["build_id"]})
        if status["status"] == "failed":
            break
        time.sleep(0.05)
    check("workflows/buildStatus", status, BUILD)
    assert status["status"] == "failed" and "debug.llm" in status["error"]
    # logs/list
    logs = call(v1, "logs/list", {"jobId": made["job_id"], "limit": 2})
    check("logs/list", logs, {"logs": A, "nextPageToken": (S, N)})
    for entry in logs["logs"]:
        check("logs/list.logs[]", entry, LOG)
        assert entry["level"] in ("info", "warn", "error")
    # schedules/*
    sc = call(v1, "schedules/create", {"workflow": "greet", "params": {"name": "c"},
                                       "cron_expr": "0 3 * * *", "enabled": False})
    check("schedules/create", sc, {"success": B, "schedule": OBJ})
    check("schedules/create.schedule", sc["schedule"], SCHEDULE)
    sid = sc["schedule"]["id"]
    check("schedules/get", call(v1, "schedules/get", {"id": sid})["schedule"], SCHEDULE)
    check("schedules/update", call(v1, "schedules/update", {"id": sid, "timeout_seconds": 60})
          ["schedule"], SCHEDULE)
    for s in call(v1, "schedules/list", {"limit": 200})["schedules"]:
        check("schedules/list[]", s, SCHEDULE)
    check("schedules/delete", call(v1, "schedules/delete", {"id": sid}), {"success": B, "id": S})
    # credentials/*
    check("credentials/upsert", call(v1, "credentials/upsert", {"name": "conf", "value": "v"}),
          {"overwritten": B})
    check("credentials/get", call(v1, "credentials/get", {"name": "conf"}),
          {"id": S, "name": S, "value": S})
    check("credentials/list", call(v1, "credentials/list"), {"credentials": A})
    # webhooks/*
    rx = Receiver()
    try:
        hook = call(v1, "webhooks/create", {"url": rx.url, "description": "d", "active": False})
        check("webhooks/create", hook, {"signing_secret": S, "webhook": OBJ})
        check("webhooks/create.webhook", hook["webhook"],
              {"id": S, "url": S, "description": (S, N), "active": B})
        check("webhooks/list", call(v1, "webhooks/list"), {"webhooks": A})
        check("webhooks/update", call(v1, "webhooks/update", {"id": hook["webhook"]["id"],
                                                              "description": "e"}),
              {"webhook": OBJ})
        check("webhooks/deliveries", call(v1, "webhooks/deliveries"), {"deliveries": A})
        check("webhooks/delete", call(v1, "webhooks/delete", {"id": hook["webhook"]["id"]}),
              {"success": B})
    finally:
        close(rx)
    # recordings/get: null when the run has none.
    rec = call(v1, "recordings/get", {"job_id": made["job_id"]})
    check("recordings/get", rec, {"recording_url": (S, N), "recording_url_expires_at": (S, N)})
    # sessions: an unknown session is a 404 in the error envelope; telemetry needs no body.
    r = v1.post("/v1/sessions/get", json={"json": {"session_id": "nope"}})
    assert r.status_code == 404 and r.json()["json"]["message"]
    r = v1.post("/v1/recordings/get", json={"json": {"session_id": "nope"}})
    assert r.status_code == 404 and r.json()["json"]["message"]
    assert v1.post("/v1/telemetry/recordCliEvent", json={"json": {}}).status_code in (200, 204,
                                                                                      404)


def test_sessions_create_get_close(v1: httpx.Client, chromium_path: str) -> None:
    made = call(v1, "sessions/create", {"timeout_seconds": 60})
    check("sessions/create", made, SESSION)
    assert made["status"] == "running" and made["cdp_url"].startswith("ws://")
    try:
        got = call(v1, "sessions/get", {"session_id": made["session_id"]})
        check("sessions/get", got, SESSION)
        assert got["session_id"] == made["session_id"]
        rec = call(v1, "recordings/get", {"session_id": made["session_id"]})
        assert rec == {"recording_url": None, "recording_url_expires_at": None}
        # sessions/list (a Partitur addition): the caller's sessions, newest first.
        listed = call(v1, "sessions/list")["sessions"]
        for s in listed:
            check("sessions/list[]", s, SESSION)
        assert listed[0]["session_id"] == made["session_id"]
        assert listed[0]["live_view_url"] and listed[0]["status"] == "running"
        running = call(v1, "sessions/list", {"status": "running"})["sessions"]
        assert made["session_id"] in [s["session_id"] for s in running]
        r = v1.post("/v1/sessions/list", json={"json": {"status": "sleeping"}})
        assert r.status_code == 400 and r.json()["json"]["data"]["issues"][0]["path"] == [
            "status"]
    finally:
        closed = call(v1, "sessions/close", {"session_id": made["session_id"]})
    check("sessions/close", closed, SESSION)
    assert closed["status"] != "running" and closed["closed_at"]
    by_status = {status: [s["session_id"] for s in call(v1, "sessions/list",
                                                          {"status": status})["sessions"]]
                 for status in ("running", "closed")}
    assert made["session_id"] in by_status["closed"]
    assert made["session_id"] not in by_status["running"]


def test_error_envelope_for_every_layer(v1: httpx.Client) -> None:
    for r, status in ((v1.post("/v1/jobs/get", json={"json": {"id": "nope"}}), 404),
                      (v1.post("/v1/jobs/create", json={"json": {}}), 400),
                      (v1.get("/v1/jobs/list"), 405),
                      (v1.post("/v1/jobs/get", content=b"x" * 300_000), 413),
                      (v1.post("/v1/unknown/route"), 404)):
        assert r.status_code == status, r.text
        err = r.json()["json"]
        check(f"error {status}", err, {"defined": B, "code": S, "status": INT, "message": S,
                                       "data": OBJ})
        assert err["status"] == status and err["message"]


def _source() -> str:
    from v1_helpers import workspace

    return workspace()
