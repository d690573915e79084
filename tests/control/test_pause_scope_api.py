"""Pausing a whole workspace or task through a real `partitur serve` (with auth, so the
events say who did it): new jobs queue and start on resume, triggers queue or skip by
their concurrency policy, the pause shows in the workspace list and task detail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness import ServerProcess
from job_polling import start_job, wait_job

ADMIN = {"email": "admin@example.com", "password": "admin-password-1", "name": "Admin"}
WORKFLOW = """
tasks:
  quick:
    flow:
      run: { type: shell, interpreter: sh, script: "true" }
  other:
    flow:
      run: { type: shell, interpreter: sh, script: "true" }
  ticked-skip:
    flow:
      run: { type: shell, interpreter: sh, script: "true" }
  ticked-queue:
    flow:
      run: { type: shell, interpreter: sh, script: "true" }
triggers:
  every-second-skip:
    type: scheduler
    cron: "* * * * * *"
    task: ticked-skip
    concurrency: skip
  every-second-queue:
    type: scheduler
    cron: "* * * * * *"
    task: ticked-queue
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("pause-scope")
    ws = tmp / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "main.yaml").write_text(WORKFLOW)
    proc = ServerProcess(tmp, workspaces={"main": ws}, settings={
        "auth": {"initial_user": ADMIN}, "workers": {"local": {"concurrency": 2}}})
    proc.start()
    try:
        with httpx.Client(base_url=proc.url, timeout=15.0) as c:
            r = c.post("/api/auth/login", json={"email": ADMIN["email"],
                                                "password": ADMIN["password"]})
            assert r.status_code == 200, r.text
            c.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            yield c
    finally:
        proc.close()


def execute(client: httpx.Client, task: str) -> str:
    return start_job(client, "main", task)


def jobs_of(client: httpx.Client, task: str) -> list[dict[str, Any]]:
    r = client.get("/api/jobs", params={"workspace": "main", "task_name": task,
                                        "limit": 100})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()
    return items


def test_a_paused_task_queues_new_jobs_and_starts_them_on_resume(client: httpx.Client) -> None:
    r = client.post("/api/workspaces/main/tasks/quick/pause", json={"reason": "maintenance"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["paused"] is True and body["paused_scope"] == "task"
    who = body["paused_by"]
    assert who and who in (ADMIN["email"], ADMIN["name"])
    detail = client.get("/api/workspaces/main/tasks/quick").json()
    assert detail["paused"] is True and detail["reason"] == "maintenance"
    assert client.get("/api/workspaces/main/tasks/other").json()["paused"] is False

    # A new job of the paused task waits; another task runs as usual.
    held = execute(client, "quick")
    free = execute(client, "other")
    assert wait_job(client, free, 20.0)["status"] == "completed"
    time.sleep(0.3)
    assert client.get(f"/api/jobs/{held}").json()["status"] == "pending"
    explained = client.get(f"/api/jobs/{held}/explain").json()
    assert explained["reason"] == f"task quick paused by {who}: maintenance"
    events = client.get(f"/api/jobs/{held}/events").json()
    assert events[-1]["type"] == "JobQueued"

    # Resuming starts it; resuming again changes nothing.
    r = client.post("/api/workspaces/main/tasks/quick/resume", json={})
    assert r.status_code == 200 and r.json()["paused"] is False
    assert wait_job(client, held, 20.0)["status"] == "completed"
    assert client.post("/api/workspaces/main/tasks/quick/resume").status_code == 200
    assert client.post("/api/workspaces/main/tasks/nope/pause").status_code == 404


def test_a_paused_workspace_holds_every_task(client: httpx.Client) -> None:
    r = client.post("/api/workspaces/main/pause", json={})
    assert r.status_code == 200, r.text
    listed = {w["name"]: w for w in client.get("/api/workspaces").json()}
    assert listed["main"]["paused"] is True and listed["main"]["paused_by"]
    held = [execute(client, "quick"), execute(client, "other")]
    time.sleep(0.3)
    assert [client.get(f"/api/jobs/{j}").json()["status"] for j in held] == ["pending"] * 2
    detail = client.get("/api/workspaces/main/tasks/other").json()
    assert detail["paused"] is True and detail["paused_scope"] == "workspace"
    # A task resumed on its own still waits for its workspace.
    client.post("/api/workspaces/main/tasks/quick/pause", json={})
    client.post("/api/workspaces/main/tasks/quick/resume", json={})
    time.sleep(0.2)
    assert client.get(f"/api/jobs/{held[0]}").json()["status"] == "pending"
    r = client.post("/api/workspaces/main/resume", json={})
    assert r.status_code == 200 and r.json()["paused"] is False
    assert [wait_job(client, j, 20.0)["status"] for j in held] == ["completed"] * 2
    assert client.get("/api/workspaces").json()[0]["paused"] is False


def test_triggers_of_a_paused_task_skip_or_queue_by_their_policy(client: httpx.Client) -> None:
    for task in ("ticked-skip", "ticked-queue"):
        assert client.post(f"/api/workspaces/main/tasks/{task}/pause", json={}).status_code == 200
    paused_at = time.time()
    time.sleep(2.5)
    skip = [j for j in jobs_of(client, "ticked-skip") if j["created_at"] > _iso(paused_at)]
    queue = [j for j in jobs_of(client, "ticked-queue") if j["created_at"] > _iso(paused_at)]
    assert skip and {j["status"] for j in skip} == {"skipped"}
    assert queue and {j["status"] for j in queue} == {"pending"}
    for task in ("ticked-skip", "ticked-queue"):
        client.post(f"/api/workspaces/main/tasks/{task}/resume", json={})
    assert {wait_job(client, j["job_id"], 20.0)["status"] for j in queue} == {"completed"}


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
