"""The composition example served by a real server: an approval, a hook of the
suspension, a child job with the links both ways in the job detail, task state."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_helpers import execute, wait_job, wait_step
from harness import ServerProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "workspaces" / "composition"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("composition")
    ws = tmp / "composition"  # a copy: the hook action writes into the workspace folder
    shutil.copytree(EXAMPLE, ws, ignore=shutil.ignore_patterns("announcements.log"))
    server = ServerProcess(tmp, workspaces={"composition": ws}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=15) as c:
            yield c
    finally:
        server.close()


def test_gated_release_suspends_fires_its_hook_and_builds_as_a_child_job(
        client: httpx.Client) -> None:
    job_id = execute(client, "gated-release", {"version": "2.0.0"}, workspace="composition")
    job = wait_step(client, job_id, "approve", "suspended")
    gate = next(s for s in job["steps"] if s["step_name"] == "approve")
    assert gate["message"] == "Publish 2.0.0?"
    # on_suspended ran as a hook job that names the waiting step's message.
    deadline = time.monotonic() + 20
    while not any(h["source_id"] == f"{job_id}/on_suspended[0]:approve" for h in client.get(
            "/api/jobs", params={"source_type": "hook", "limit": 100}).json()):
        assert time.monotonic() < deadline, "the on_suspended hook never started"
        time.sleep(0.05)

    r = client.post(f"/api/jobs/{job_id}/steps/approve/approve",
                    json={"approved": True, "input": {"note": "ok"}})
    assert r.status_code == 200, r.text
    job = wait_job(client, job_id)
    assert job["status"] == "completed", job
    # The approver sent only the form field; what the step was given stands.
    approval = next(s for s in job["steps"] if s["step_name"] == "approve")
    assert approval["output"]["input"] == {"version": "2.0.0", "note": "ok"}
    build = next(s for s in job["steps"] if s["step_name"] == "build")
    assert build["output"] == {"package": {"artifact": "app-2.0.0.tar.gz"}}
    child_id = build["child_job_id"]
    assert job["children"] == [child_id]
    child = client.get(f"/api/jobs/{child_id}").json()
    assert child["parent_job_id"] == job_id and child["task_name"] == "build"
    assert (child["source_type"], child["source_id"]) == ("task", f"{job_id}/build")


def test_release_counts_in_the_task_state(client: httpx.Client) -> None:
    outputs = []
    for _ in range(2):
        job = wait_job(client, execute(client, "release", workspace="composition"))
        assert job["status"] == "completed", job
        outputs.append(next(s for s in job["steps"] if s["step_name"] == "count")["output"])
    assert outputs[1]["previous"] == outputs[0]["previous"] + 1
