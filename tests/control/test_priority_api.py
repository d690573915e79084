"""Priorities through a real `partitur serve`: claims by priority, FIFO within one,
aging bounds starvation under a flood, priority on execute, concurrency per key (queue,
skip, cancel_previous), explain naming the job that holds the only worker slot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess
from job_polling import start_job, wait_job

WORKFLOW = """
tasks:
  work:
    priority: 3
    input:
      pause: { type: number, default: 0.1 }
    flow:
      run:
        type: shell
        interpreter: sh
        input: { pause: "<< input.pause >>" }
        script: sleep << input.pause >>
  urgent:
    priority: 1
    flow:
      run: { type: shell, interpreter: sh, script: "true" }
  per-customer:
    input:
      customer: { type: string, required: true }
    concurrency: { key: "<< input.customer >>", limit: 1, policy: queue }
    flow:
      run: { type: shell, interpreter: sh, script: sleep 0.6 }
  per-customer-skip:
    input:
      customer: { type: string, required: true }
    concurrency: { key: "<< input.customer >>", limit: 1, policy: skip }
    flow:
      run: { type: shell, interpreter: sh, script: sleep 0.6 }
  per-customer-cancel:
    input:
      customer: { type: string, required: true }
      pause: { type: number, default: 0.2 }
    concurrency: { key: "<< input.customer >>", limit: 1, policy: cancel_previous }
    flow:
      run:
        type: shell
        interpreter: sh
        input: { pause: "<< input.pause >>" }
        script: sleep << input.pause >>
"""


def _serve(tmp: Path, aging: str | None) -> ServerProcess:
    ws = tmp / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "main.yaml").write_text(WORKFLOW)
    settings: dict[str, Any] = {"workers": {"local": {"concurrency": 1}}}
    if aging is not None:
        settings["scheduling"] = {"aging": aging}
    proc = ServerProcess(tmp, workspaces={"main": ws}, settings=settings)
    proc.start()
    return proc


@pytest.fixture(scope="module")
def aged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    proc = _serve(tmp_path_factory.mktemp("aged"), "0.1s")
    try:
        with httpx.Client(base_url=proc.url, timeout=15.0) as client:
            yield client
    finally:
        proc.close()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    proc = _serve(tmp_path_factory.mktemp("plain"), None)
    try:
        with httpx.Client(base_url=proc.url, timeout=15.0) as client:
            yield client
    finally:
        proc.close()


def execute(client: httpx.Client, task: str, body: dict[str, Any] | None = None) -> str:
    return start_job(client, "main", task, body)


def started(job: dict[str, Any]) -> datetime:
    assert job["status"] == "completed", job
    return datetime.fromisoformat(job["steps"][0]["started_at"].replace("Z", "+00:00"))


def _flood(client: httpx.Client) -> tuple[int, int]:
    """A long job holds the only slot; one priority-5 job, then 16 priority-1 jobs wait.
    Returns how many of the priority-1 jobs started before the priority-5 one, and 16."""
    blocker = execute(client, "work", {"input": {"pause": 0.5}, "priority": 1})
    low = execute(client, "work", {"priority": 5})
    high = [execute(client, "work", {"input": {"pause": 0.05}, "priority": 1})
            for _ in range(16)]
    low_start = started(wait_job(client, low))
    high_starts = [started(wait_job(client, job_id)) for job_id in high]
    wait_job(client, blocker)
    return sum(1 for t in high_starts if t < low_start), len(high_starts)


def test_without_aging_a_flood_of_high_priority_jobs_starves_a_low_one(
        plain: httpx.Client) -> None:
    before, total = _flood(plain)
    assert before == total


def test_with_aging_a_low_priority_job_progresses_under_a_flood(aged: httpx.Client) -> None:
    before, total = _flood(aged)
    # 0.1 s per level: after ~0.4 s of waiting it competes as priority 1, and is older.
    assert before < total - 5, (before, total)


def test_fifo_within_one_priority_and_higher_first(plain: httpx.Client) -> None:
    blocker = execute(plain, "work", {"input": {"pause": 0.4}})
    order = [execute(plain, "work", {"priority": p}) for p in (4, 2, 4, 2)]
    jobs = {job_id: started(wait_job(plain, job_id)) for job_id in order}
    wait_job(plain, blocker)
    ranked = sorted(order, key=lambda j: jobs[j])
    assert ranked == [order[1], order[3], order[0], order[2]]


def test_execute_takes_a_priority_of_1_to_5(plain: httpx.Client) -> None:
    job_id = execute(plain, "urgent")
    assert wait_job(plain, job_id)["status"] == "completed"
    events = plain.get(f"/api/jobs/{job_id}/events").json()
    assert events[0]["data"]["priority"] == 1  # the task's own priority
    job_id = execute(plain, "urgent", {"priority": 4})
    events = plain.get(f"/api/jobs/{job_id}/events").json()
    assert events[0]["data"]["priority"] == 4
    for bad in (0, 6, "high", 2.5, True):
        r = plain.post("/api/workspaces/main/tasks/urgent/execute", json={"priority": bad})
        assert r.status_code == 400, (bad, r.text)
        assert "priority" in r.text
    detail = plain.get("/api/workspaces/main/tasks/urgent").json()
    assert detail["priority"] == 1


def test_concurrency_limits_are_per_rendered_key(aged: httpx.Client) -> None:
    first = execute(aged, "per-customer", {"input": {"customer": "acme"}})
    second = execute(aged, "per-customer", {"input": {"customer": "acme"}})
    other = execute(aged, "per-customer", {"input": {"customer": "globex"}})
    job = aged.get(f"/api/jobs/{second}").json()
    assert job["status"] == "pending"
    explained = aged.get(f"/api/jobs/{second}/explain").json()
    assert explained["reason"] == f"concurrency slot held by job {first}"
    assert aged.get(f"/api/jobs/{other}").json()["status"] in ("running", "completed")
    done = [wait_job(aged, j) for j in (first, second, other)]
    assert [j["status"] for j in done] == ["completed"] * 3
    assert started(done[1]) >= started(done[0])


def test_concurrency_skip_policy_per_key(aged: httpx.Client) -> None:
    first = execute(aged, "per-customer-skip", {"input": {"customer": "acme"}})
    second = execute(aged, "per-customer-skip", {"input": {"customer": "acme"}})
    other = execute(aged, "per-customer-skip", {"input": {"customer": "initech"}})
    assert wait_job(aged, second)["status"] == "skipped"
    assert wait_job(aged, first)["status"] == "completed"
    assert wait_job(aged, other)["status"] == "completed"


def test_concurrency_cancel_previous_policy_per_key(aged: httpx.Client) -> None:
    first = execute(aged, "per-customer-cancel", {"input": {"customer": "acme", "pause": 60}})
    deadline = time.monotonic() + 30
    while aged.get(f"/api/jobs/{first}").json()["steps"][0]["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    other = execute(aged, "per-customer-cancel", {"input": {"customer": "initech"}})
    second = execute(aged, "per-customer-cancel", {"input": {"customer": "acme"}})
    # The newer job of the key cancels the running one; another key is not touched.
    assert wait_job(aged, first)["status"] == "cancelled"
    assert wait_job(aged, second)["status"] == "completed"
    assert wait_job(aged, other)["status"] == "completed"
    events = aged.get(f"/api/jobs/{first}/events").json()
    cancel = next(e for e in events if e["type"] == "JobCancelRequested")
    assert second in cancel["data"]["reason"], cancel


def test_explain_names_the_job_holding_the_only_worker_slot(plain: httpx.Client) -> None:
    holder = execute(plain, "work", {"input": {"pause": 30}})
    deadline = time.monotonic() + 30
    while plain.get(f"/api/jobs/{holder}").json()["steps"][0]["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waiting = execute(plain, "work")
    step: dict[str, Any] = {}
    while time.monotonic() < deadline:
        steps = plain.get(f"/api/jobs/{waiting}/explain").json()["steps"]
        if steps and steps[0]["code"] == "concurrency_slot":
            step = steps[0]
            break
        time.sleep(0.05)
    assert step.get("reason") == f"concurrency slot held by job {holder}", step
    assert step["held_by"] == [holder]
    assert plain.post(f"/api/jobs/{holder}/cancel", json={}).status_code == 200
    assert wait_job(plain, holder)["status"] == "cancelled"
    assert wait_job(plain, waiting)["status"] == "completed"
