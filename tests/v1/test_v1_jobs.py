"""Cloud API over HTTP: wire format, deployments, workflows, jobs and logs."""

from __future__ import annotations

import uuid

import httpx
from v1_helpers import WORKFLOWS, call, deploy, wait_job


def test_wire_format_errors_are_envelopes(v1: httpx.Client) -> None:
    # Unknown route, malformed body, missing field: all in the error envelope.
    r = v1.post("/v1/nope/nothing", json={"json": {}})
    assert r.status_code == 404
    err = r.json()["json"]
    assert err["code"] == "NOT_FOUND" and err["status"] == 404 and err["message"]
    assert err["defined"] is False
    r = v1.post("/v1/jobs/get", content=b"{nope")
    assert r.status_code == 400 and r.json()["json"]["code"] == "BAD_REQUEST"
    r = v1.post("/v1/jobs/create", json={"json": {}})
    assert r.status_code == 400
    assert r.json()["json"]["data"]["issues"][0]["path"] == ["workflow"]
    # An empty body counts as {"json": {}}.
    r = v1.post("/v1/deployments/list")
    assert r.status_code == 200 and isinstance(r.json()["json"]["deployments"], list)


def test_deploy_run_get_list_logs(v1: httpx.Client) -> None:
    dep = deploy(v1)
    assert sorted(dep["workflows"]) == ["boom", "greet", "secretive", "slow"]
    assert dep["build_error"] is None and dep["built_at"]
    wf = call(v1, "workflows/get", {"workflow": "greet"})
    assert wf["deployment_id"] == dep["id"]
    schema = wf["input_schema"]
    assert schema["properties"]["name"]["type"] == "string"
    assert schema["required"] == ["name"]
    assert schema["properties"]["times"] == {"type": "integer", "default": 1}
    assert wf["output_schema"]["type"] == "object"

    started = call(v1, "jobs/create", {"workflow": "greet", "params": {"name": "Ada"},
                                       "headless": True, "gpu": False})
    assert started["success"] is True and started["status"] == "running"
    assert uuid.UUID(started["job_id"])
    job = wait_job(v1, started["job_id"])
    assert job["status"] == "completed", job
    assert job["result"] == {"hello": {"greeting": "hi"}}
    assert job["workflow"] == "greet" and job["deployment_id"] == dep["id"]
    assert job["hosted_workflow_id"] is None and job["live_view_url"] is None
    assert job["error"] is None and job["mapped_stack"] is None

    listed = call(v1, "jobs/list", {"limit": 100})
    assert started["job_id"] in [j["job_id"] for j in listed["jobs"]]
    logs = call(v1, "logs/list", {"jobId": started["job_id"]})
    messages = [entry["message"] for entry in logs["logs"]]
    assert "hello Ada" in messages
    entry = next(e for e in logs["logs"] if e["message"] == "hello Ada")
    assert entry["jobId"] == started["job_id"] and entry["workflow"] == "greet"
    assert entry["level"] == "info" and entry["timestamp"].endswith("Z")


def test_params_are_validated_with_issues(v1: httpx.Client) -> None:
    deploy(v1)
    r = v1.post("/v1/jobs/create", json={"json": {"workflow": "greet",
                                                   "params": {"times": "many"}}})
    assert r.status_code == 400
    paths = [i["path"] for i in r.json()["json"]["data"]["issues"]]
    assert ["params", "times"] in paths and ["params", "name"] in paths
    r = v1.post("/v1/jobs/create", json={"json": {"workflow": "greet", "params": {"name": "x"},
                                                   "callback_url": "http://127.0.0.1:9/x"}})
    assert r.status_code == 400
    r = v1.post("/v1/jobs/create", json={"json": {"workflow": "greet", "params": {"name": "x"},
                                                   "timeout_seconds": 3601}})
    assert r.status_code == 400
    r = v1.post("/v1/jobs/create", json={"json": {"workflow": "nope", "params": {}}})
    assert r.status_code == 404


def test_nonce_returns_the_first_job(v1: httpx.Client) -> None:
    deploy(v1)
    body = {"workflow": "greet", "params": {"name": "n"}, "nonce": f"n-{uuid.uuid4()}"}
    first = call(v1, "jobs/create", body)
    again = call(v1, "jobs/create", body)
    assert again["job_id"] == first["job_id"]
    other = call(v1, "jobs/create", {**body, "nonce": f"n-{uuid.uuid4()}"})
    assert other["job_id"] != first["job_id"]


def test_failed_job_has_error_mapped_stack_logs_and_debug_report(v1: httpx.Client) -> None:
    deploy(v1)
    job_id = call(v1, "jobs/create", {"workflow": "boom", "params": {}})["job_id"]
    job = wait_job(v1, job_id)
    assert job["status"] == "failed"
    assert job["error"]
    stack = job["mapped_stack"]
    assert stack["step"] == "explode" and stack["file"] == ".workflows/main.yaml"
    lines = WORKFLOWS.splitlines()
    assert stack["line"] == lines.index("      explode:") + 1
    errors = call(v1, "logs/list", {"jobId": job_id, "level": "error"})["logs"]
    assert any(e["message"] == "going down" for e in errors)
    assert all(e["level"] == "error" for e in errors)
    report = call(v1, "jobs/debugReport", {"id": job_id})
    assert report["job_id"] == job_id and report["error"] and report["tldr"]
    assert report["debug_agent_mode"] == "debug"  # the reference's: debug or autofix
    assert "going down" in report["handoff_prompt"]
    assert report["job_workflow"] == "boom" and report["job_mapped_stack"]["step"] == "explode"
    failed = call(v1, "jobs/list", {"status": "failed", "limit": 100})["jobs"]
    assert job_id in [j["job_id"] for j in failed]
    assert all(j["status"] == "failed" for j in failed)


def test_cancel_and_timeout(v1: httpx.Client) -> None:
    deploy(v1)
    job_id = call(v1, "jobs/create", {"workflow": "slow", "params": {}})["job_id"]
    wait_job(v1, job_id, until={"running"})
    cancelled = call(v1, "jobs/cancel", {"id": job_id})
    assert cancelled["success"] is True
    assert wait_job(v1, job_id)["status"] == "cancelled"
    again = call(v1, "jobs/cancel", {"id": job_id})
    assert again["success"] is False and "cancelled" in again["message"]
    short = call(v1, "jobs/create", {"workflow": "slow", "params": {},
                                     "timeout_seconds": 1})["job_id"]
    job = wait_job(v1, short, timeout=15)
    assert job["status"] == "cancelled" and "timed out" in (job["error"] or "")


def test_jobs_list_pages_newest_first(v1: httpx.Client) -> None:
    deploy(v1)
    ids = [call(v1, "jobs/create", {"workflow": "greet", "params": {"name": str(i)}})["job_id"]
           for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        page = call(v1, "jobs/list", {"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert len(page["jobs"]) <= 2
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    mine = [j for j in seen if j in ids]
    assert mine == list(reversed(ids))
