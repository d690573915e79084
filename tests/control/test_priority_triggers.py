"""`priority` on triggers, through a real `partitur serve`: webhook, event and scheduler
triggers fire jobs with the trigger's priority when it sets one, else the task's."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from harness import ServerProcess

WORKFLOW = """
tasks:
  base:
    priority: 4
    flow:
      run: { type: shell, interpreter: sh, script: "true" }
  follow:
    flow:
      run: { type: shell, interpreter: sh, script: "true" }
  ticked:
    priority: 5
    flow:
      run: { type: shell, interpreter: sh, script: "true" }
triggers:
  hook-urgent:
    type: webhook
    task: base
    priority: 1
  hook-plain:
    type: webhook
    task: base
  after-base:
    type: event
    task: follow
    priority: 2
    on: { task: base }
  every-second:
    type: scheduler
    cron: "* * * * * *"
    task: ticked
    priority: 2
"""
TERMINAL = {"completed", "failed", "cancelled", "skipped"}


def priority_of(client: httpx.Client, job_id: str) -> int:
    events = client.get(f"/api/jobs/{job_id}/events").json()
    created = next(e for e in events if e["type"] == "JobCreated")
    value: int = created["data"]["priority"]
    return value


def wait_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job {job_id} never ended: {job}"
        time.sleep(0.05)


def jobs_of(client: httpx.Client, task: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        found: list[dict[str, Any]] = client.get(
            "/api/jobs", params={"workspace": "main", "task_name": task}).json()
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"no {count} jobs of {task}: {found}"
        time.sleep(0.1)


def test_triggers_fire_jobs_with_their_priority(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "main.yaml").write_text(WORKFLOW)
    server = make_server(workspaces={"main": ws})
    with httpx.Client(base_url=server.url, timeout=15.0) as client:
        urgent = client.post("/hooks/hook-urgent", json={})
        assert urgent.status_code == 202, urgent.text
        plain = client.post("/hooks/hook-plain", json={})
        assert plain.status_code == 202, plain.text
        urgent_id, plain_id = urgent.json()["job_id"], plain.json()["job_id"]
        assert priority_of(client, urgent_id) == 1  # the trigger's
        assert priority_of(client, plain_id) == 4  # the task's
        for job_id in (urgent_id, plain_id):
            assert wait_job(client, job_id)["status"] == "completed"

        # Each completed `base` job fires `follow` through the event trigger.
        followers = jobs_of(client, "follow", 2)
        assert [priority_of(client, j["job_id"]) for j in followers] == [2, 2]
        ticked = jobs_of(client, "ticked", 1)
        assert priority_of(client, ticked[-1]["job_id"]) == 2
        # The task detail shows its own priority; the trigger overrides it per job.
        assert client.get("/api/workspaces/main/tasks/ticked").json()["priority"] == 5
