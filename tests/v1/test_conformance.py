"""Conformance with the reference pages (shared/reference/libretto-*.md, cloud-api-notes.md).

Walks every route the pages name and checks that each response field they list is
present with the right JSON type, that every request field they list is accepted and
honoured (with the extra fields clients send ignored), and the page-size bounds: the
list a reviewer would tick.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
from receiver import Receiver, close
from v1_helpers import call, deploy, tarball, wait_job

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
    made = call(v1, "sessions/create")
    check("sessions/create", made, SESSION)
    lifetime = (datetime.fromisoformat(made["expires_at"])
                - datetime.fromisoformat(made["created_at"])).total_seconds()
    assert round(lifetime) == 3600  # the default timeout
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


CREDENTIAL = {"id": S, "name": S, "description": (S, N), "created_at": S, "updated_at": S}
HOOK = {"id": S, "url": S, "description": (S, N), "active": B, "created_at": S,
        "updated_at": S}
DELIVERY = {"id": S, "webhook_id": (S, N), "job_id": S, "event": S, "url": S, "status": S,
            "message_id": S, "attempts": A, "next_attempt_at": (S, N), "created_at": S,
            "updated_at": S}
ATTEMPT = {"attempt": INT, "at": S, "status_code": (INT, N), "latency_ms": (INT, "float"),
           "error": (S, N)}
IN_PROGRESS = {"build_id": S, "status": S, "workflow_name": (S, N), "summary": (S, N),
               "error": (S, N), "created_at": S, "updated_at": S}
TYPES["float"] = float
# What clients send besides the listed fields (cloud-api-notes.md): ignored.
CLIENT_EXTRAS = {"credential_id": "c", "headless": True, "start_url": "https://example.com",
                 "gpu": False, "viewport": {"width": 1280, "height": 720},
                 "residential_proxy": False, "disable_default_proxy": True}


def test_every_request_field_is_honoured(v1: httpx.Client) -> None:
    # deployments/create: description, source, entry_point, auto_repair
    made = call(v1, "deployments/create", {"source": _source(), "description": "all fields",
                                           "entry_point": "main.ts", "auto_repair": True})
    dep = _synced(v1, made["deployment_id"])
    assert dep["description"] == "all fields" and dep["entry_point"] == "main.ts"
    # jobs/create: workflow, params, nonce, timeout_seconds, callback_url, callback_secret,
    # skip_callbacks (+ the fields clients add)
    rx = Receiver()
    try:
        body = {"workflow": "greet", "params": {"name": "all"}, "nonce": "all-fields",
                "timeout_seconds": 120, "callback_url": rx.url + "/all",
                "callback_secret": "sec", "skip_callbacks": False, **CLIENT_EXTRAS}
        made = call(v1, "jobs/create", body)
        assert made["success"] is True and made["status"] == "running" and made["message"]
        job = wait_job(v1, made["job_id"])
        assert job["params"] == {"name": "all"} and job["timeout_seconds"] == 120
        assert job["nonce"] == "all-fields" and job["status"] == "completed"
        for _ in range(300):
            found = call(v1, "webhooks/deliveries", {"job_id": made["job_id"]})["deliveries"]
            if found and found[0]["status"] == "delivered":
                break
            time.sleep(0.05)
        check("webhooks/deliveries[]", found[0], DELIVERY)
        for attempt in found[0]["attempts"]:
            check("webhooks/deliveries[].attempts[]", attempt, ATTEMPT)
        again = call(v1, "webhooks/redeliver", {"id": found[0]["id"]})
        check("webhooks/redeliver", again, {"success": B, "delivery": OBJ})
        check("webhooks/redeliver.delivery", again["delivery"], DELIVERY)
    finally:
        close(rx)
    # jobs/list: status, limit, cursor
    page = call(v1, "jobs/list", {"status": "completed", "limit": 1})
    assert len(page["jobs"]) == 1 and page["jobs"][0]["status"] == "completed"
    if page["next_cursor"]:
        nxt = call(v1, "jobs/list", {"status": "completed", "limit": 1,
                                     "cursor": page["next_cursor"]})
        assert nxt["jobs"][0]["job_id"] != page["jobs"][0]["job_id"]
    # logs/list: jobId, workflow, level, pageToken, limit
    logs = call(v1, "logs/list", {"jobId": made["job_id"], "workflow": "greet",
                                  "level": "info", "limit": 1})
    assert len(logs["logs"]) == 1 and logs["nextPageToken"]
    more = call(v1, "logs/list", {"pageToken": logs["nextPageToken"], "limit": 1})
    assert more["logs"] and more["logs"][0]["jobId"] == made["job_id"]
    # schedules/create with every field, update of every field, list filters
    created = call(v1, "schedules/create", {
        "workflow": "greet", "params": {"name": "s"}, "cron_expr": "15 4 * * 1",
        "timezone": "America/New_York", "timeout_seconds": 300,
        "callback_url": "https://example.com/cb", "callback_secret": "x",
        "skip_callbacks": True, "enabled": False, **CLIENT_EXTRAS})["schedule"]
    assert {k: created[k] for k in ("workflow", "params", "cron_expr", "timezone",
                                    "timeout_seconds", "callback_url", "skip_callbacks",
                                    "enabled")} == {
        "workflow": "greet", "params": {"name": "s"}, "cron_expr": "15 4 * * 1",
        "timezone": "America/New_York", "timeout_seconds": 300,
        "callback_url": "https://example.com/cb", "skip_callbacks": True, "enabled": False}
    assert created["next_fire_at"] is None  # disabled
    updated = call(v1, "schedules/update", {
        "id": created["id"], "params": {"name": "t"}, "cron_expr": "0 12 * * *",
        "timezone": "Asia/Tokyo", "timeout_seconds": 60, "callback_url": None,
        "callback_secret": None, "skip_callbacks": False, "enabled": True})["schedule"]
    assert {k: updated[k] for k in ("params", "cron_expr", "timezone", "timeout_seconds",
                                    "callback_url", "skip_callbacks", "enabled")} == {
        "params": {"name": "t"}, "cron_expr": "0 12 * * *", "timezone": "Asia/Tokyo",
        "timeout_seconds": 60, "callback_url": None, "skip_callbacks": False, "enabled": True}
    assert updated["next_fire_at"].endswith(":00:00Z")  # 12:00 Tokyo = 03:00Z
    assert updated["next_fire_at"][11:13] == "03"
    listed = call(v1, "schedules/list", {"enabled": True, "workflow": "greet", "limit": 200})
    assert created["id"] in [x["id"] for x in listed["schedules"]]
    assert created["id"] not in [x["id"] for x in call(v1, "schedules/list", {
        "enabled": False})["schedules"]]
    assert created["id"] not in [x["id"] for x in call(v1, "schedules/list", {
        "workflow": "boom"})["schedules"]]
    call(v1, "schedules/delete", {"id": created["id"]})
    # credentials: every route's fields
    cred = call(v1, "credentials/create", {"name": "conf_all", "value": "v",
                                           "description": "d"})
    check("credentials/create", cred, {"success": B, "credential": OBJ})
    check("credentials/create.credential", cred["credential"], CREDENTIAL)
    for c in call(v1, "credentials/list")["credentials"]:
        check("credentials/list[]", c, CREDENTIAL)
        assert "value" not in c
    got = call(v1, "credentials/get", {"id": cred["credential"]["id"]})
    check("credentials/get", got, {**CREDENTIAL, "value": S})
    upd = call(v1, "credentials/update", {"id": cred["credential"]["id"], "value": "w",
                                          "description": "e"})
    check("credentials/update", upd, {"success": B, "credential": OBJ})
    assert upd["credential"]["description"] == "e"
    check("credentials/upsert", call(v1, "credentials/upsert", {
        "name": "conf_all", "value": "z"}), {"success": B, "overwritten": B, "credential": OBJ})
    check("credentials/delete", call(v1, "credentials/delete", {"name": "conf_all"}),
          {"success": B, "id": S})
    # webhooks: list entries
    hook = call(v1, "webhooks/create", {"url": "https://example.com/h", "signing_secret":
                                        "given-secret", "active": False})
    assert hook["signing_secret"] == "given-secret"
    for h in call(v1, "webhooks/list")["webhooks"]:
        check("webhooks/list[]", h, HOOK)
        assert "signing_secret" not in h and "secret" not in h
    check("webhooks/update.webhook", call(v1, "webhooks/update", {
        "id": hook["webhook"]["id"], "url": "https://example.com/h2", "active": True,
        "description": "d2", "signing_secret": "rotated"})["webhook"], HOOK)
    call(v1, "webhooks/delete", {"id": hook["webhook"]["id"]})
    # workflows/build: every request field
    built = call(v1, "workflows/build", {
        "descriptions": ["read the orders"], "initial_url": "http://127.0.0.1:9/",
        "params": {"order": "1"}, "network_log": [], "entry_point": "index.ts"})
    assert built["status"] in ("pending", "agent_running")
    # Page size bounds of the reference: jobs ≤ 100, logs ≤ 1000, schedules ≤ 200.
    for route, limit in (("jobs/list", 101), ("logs/list", 1001), ("schedules/list", 201)):
        r = v1.post(f"/v1/{route}", json={"json": {"limit": limit}})
        assert r.status_code == 400 and r.json()["json"]["data"]["issues"][0]["path"] == [
            "limit"], route


def test_in_progress_builds_entries(v1: httpx.Client) -> None:
    # A deployment shows in workflows/list.in_progress_builds while it builds; a workspace
    # of many tasks takes long enough to build to be seen there.
    tasks = "".join(f"  t{i}:\n    flow:\n      s:\n        type: shell\n"
                    f"        script: echo {i}\n" for i in range(400))
    source = tarball({".workflows/many.yaml": "tasks:\n" + tasks})
    seen: list[dict[str, Any]] = []
    for _ in range(5):
        made = call(v1, "deployments/create", {"source": source, "description": "many"})
        listed = call(v1, "workflows/list")["in_progress_builds"]
        seen += [b for b in listed if b["build_id"] == made["deployment_id"]]
        _synced(v1, made["deployment_id"])
        if seen:
            break
    assert seen, "no deployment was seen building"
    check("workflows/list.in_progress_builds[]", seen[0], IN_PROGRESS)
    assert seen[0]["status"] in ("pending", "agent_running", "deploying")


def _synced(v1: httpx.Client, dep_id: str) -> dict[str, Any]:
    for _ in range(600):
        dep: dict[str, Any] = call(v1, "deployments/sync", {"id": dep_id})
        if dep["status"] != "building":
            return dep
        time.sleep(0.05)
    raise AssertionError(f"deployment {dep_id} still building")


def _source() -> str:
    from v1_helpers import workspace

    return workspace()
