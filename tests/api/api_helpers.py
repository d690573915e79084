"""Helpers of the API tests: start jobs and wait for their states over real HTTP."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "api_workspaces"

BODY_LIMIT = 64 * 1024


def api_workspaces() -> dict[str, Any]:
    return {
        "main": FIXTURES / "main",
        "broken": FIXTURES / "broken",
        "remote": {"git": {"url": "https://example.invalid/ops.git"}},
    }



TERMINAL = {"completed", "failed", "cancelled", "skipped"}


def execute(client: httpx.Client, task: str, input: dict[str, Any] | None = None,
            workspace: str = "main", **kwargs: Any) -> str:
    """Start a job and return its id (asserting a 200)."""
    r = client.post(f"/api/workspaces/{workspace}/tasks/{task}/execute",
                    json={"input": input or {}}, **kwargs)
    assert r.status_code == 200, r.text
    job_id: str = r.json()["job_id"]
    return job_id


def wait_job(client: httpx.Client, job_id: str, *, until: set[str] | None = None,
             timeout: float = 20.0) -> dict[str, Any]:
    """Poll GET /api/jobs/{id} until the job's status is in `until` (default: terminal)."""
    wanted = until or TERMINAL
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job.get("status") in wanted:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.get('status')} after {timeout}s")
        time.sleep(0.05)


def wait_step(client: httpx.Client, job_id: str, step: str, status: str,
              timeout: float = 20.0) -> dict[str, Any]:
    """Poll until `step` of the job has `status`."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        for s in job.get("steps", []):
            if s["step_name"] == step and s["status"] == status:
                return job
        if time.monotonic() > deadline:
            raise AssertionError(f"step {step} of {job_id} never reached {status}: {job}")
        time.sleep(0.05)
