"""Starting jobs and polling their state over a real server's HTTP API, for tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL = {"completed", "failed", "cancelled", "skipped"}


def start_job(client: httpx.Client, workspace: str, task: str,
              body: dict[str, Any] | None = None) -> str:
    """`POST .../execute` with `body` (default `{}`); the new job's id (asserting a 200)."""
    r = client.post(f"/api/workspaces/{workspace}/tasks/{task}/execute", json=body or {})
    assert r.status_code == 200, r.text
    job_id: str = r.json()["job_id"]
    return job_id


def wait_job(client: httpx.Client, job_id: str, timeout: float = 30.0,
             poll: float = 0.05) -> dict[str, Any]:
    """The job's detail once it is terminal; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job {job_id} never ended: {job}"
        time.sleep(poll)
