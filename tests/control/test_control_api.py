"""Explain, dry-run, pause/resume, job diff, rerun with an edited input and stuck jobs,
through a real `partitur serve` process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess

WS = Path(__file__).resolve().parents[1] / "fixtures" / "control_ws"
TERMINAL = {"completed", "failed", "cancelled", "skipped"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("control"), workspaces={"main": WS},
                         settings={"workers": {"local": {"concurrency": 4}},
                                   "stuck_after": "1s"})
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15.0) as c:
        yield c


def execute(client: httpx.Client, task: str, input: dict[str, Any] | None = None) -> str:
    r = client.post(f"/api/workspaces/main/tasks/{task}/execute", json={"input": input or {}})
    assert r.status_code == 200, r.text
    job_id: str = r.json()["job_id"]
    return job_id


def wait_for(client: httpx.Client, job_id: str, check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if check(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never got there: {job}")
        time.sleep(0.05)


def wait_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = wait_for(client, job_id, lambda j: j["status"] in TERMINAL)
    return job


def step_status(job: dict[str, Any], name: str) -> str:
    status: str = next(s["status"] for s in job["steps"] if s["step_name"] == name)
    return status


def reasons(client: httpx.Client, job_id: str) -> dict[str, dict[str, Any]]:
    r = client.get(f"/api/jobs/{job_id}/explain")
    assert r.status_code == 200, r.text
    return {entry["step"]: entry for entry in r.json()["steps"]}


# --- explain -------------------------------------------------------------------------


def test_explain_names_when_false_failed_dependency_and_skips(client: httpx.Client) -> None:
    job_id = execute(client, "plan", {"go": False})
    job = wait_job(client, job_id)
    assert job["status"] == "completed"
    why = reasons(client, job_id)
    assert why["gated"]["code"] == "when_false"
    assert why["gated"]["rendered"] == "False"
    assert "when was false" in why["gated"]["reason"]
    assert why["after-gated"]["code"] == "dependencies_skipped"
    # Steps that ran are not explained.
    assert "first" not in why and "uses-output" not in why

    failed = execute(client, "fails")
    assert wait_job(client, failed)["status"] == "failed"
    why = reasons(client, failed)
    assert why["downstream"] == {**why["downstream"], "code": "dependency_failed",
                                 "dependency": "boom",
                                 "reason": "skipped because boom failed"}


def test_explain_retry_scheduled_and_waiting_dependency(client: httpx.Client) -> None:
    job_id = execute(client, "flaky")
    wait_for(client, job_id, lambda j: any(s["retry_at"] for s in j["steps"]))
    why = reasons(client, job_id)
    assert why["try"]["code"] == "retry_scheduled"
    assert why["try"]["attempt"] == 2
    assert why["try"]["retry_at"].endswith("Z")
    assert "exit code 4" in why["try"]["last_error"]
    assert why["next"]["code"] == "waiting_for_dependency"
    assert why["next"]["reason"] == "waiting for dependency try"
    client.post(f"/api/jobs/{job_id}/cancel", json={})
    wait_job(client, job_id)


def test_explain_waiting_for_approval(client: httpx.Client) -> None:
    job_id = execute(client, "gate")
    wait_for(client, job_id, lambda j: step_status(j, "approve") == "suspended")
    why = reasons(client, job_id)
    assert why["approve"]["code"] == "waiting_for_approval"
    assert why["approve"]["reason"] == "waiting for approval: Ship it?"
    assert why["ship"]["reason"] == "waiting for dependency approve"
    r = client.post(f"/api/jobs/{job_id}/steps/approve/approve", json={"approved": True})
    assert r.status_code == 200, r.text
    assert wait_job(client, job_id)["status"] == "completed"


def test_explain_unknown_job_is_404(client: httpx.Client) -> None:
    r = client.get("/api/jobs/0190c0de-0000-7000-8000-000000000000/explain")
    assert r.status_code == 404


# --- pause and resume ----------------------------------------------------------------


def test_pause_lets_the_running_step_finish_and_starts_nothing(client: httpx.Client) -> None:
    job_id = execute(client, "chain", {"delay": 1.0})
    wait_for(client, job_id, lambda j: step_status(j, "a") == "running")
    r = client.post(f"/api/jobs/{job_id}/pause", json={"reason": "maintenance"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paused" and r.json()["paused"] is True
    # The running step finishes; the next one is not started.
    job = wait_for(client, job_id, lambda j: step_status(j, "a") == "completed")
    time.sleep(0.5)
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "paused"
    assert step_status(job, "b") == "pending" and step_status(job, "c") == "pending"
    listed = client.get("/api/jobs", params={"workspace": "main"}).json()
    assert next(j for j in listed if j["job_id"] == job_id)["status"] == "paused"
    explanation = client.get(f"/api/jobs/{job_id}/explain").json()
    assert explanation["status"] == "paused"
    assert explanation["reason"] == "job paused"
    assert {s["step"]: s["code"] for s in explanation["steps"]} == {
        "b": "job_paused", "c": "waiting_for_dependency"}

    r = client.post(f"/api/jobs/{job_id}/resume", json={})
    assert r.status_code == 200, r.text
    assert r.json()["paused"] is False
    job = wait_job(client, job_id)
    assert job["status"] == "completed"
    assert job["output"] == {"c": {"c": 3}}
    types = [e["type"] for e in client.get(f"/api/jobs/{job_id}/events").json()]
    assert types.count("JobPaused") == 1 and types.count("JobResumed") == 1
    assert types.index("JobPaused") < types.index("JobResumed")
    paused = next(e for e in client.get(f"/api/jobs/{job_id}/events").json()
                  if e["type"] == "JobPaused")
    assert paused["data"]["reason"] == "maintenance"


def test_pause_of_an_ended_job_is_409(client: httpx.Client) -> None:
    job_id = execute(client, "echo", {"msg": "hi"})
    wait_job(client, job_id)
    assert client.post(f"/api/jobs/{job_id}/pause", json={}).status_code == 409
    assert client.post(f"/api/jobs/{job_id}/resume", json={}).status_code == 409


def test_pause_and_resume_are_idempotent(client: httpx.Client) -> None:
    job_id = execute(client, "chain", {"delay": 0.5})
    assert client.post(f"/api/jobs/{job_id}/pause", json={}).status_code == 200
    assert client.post(f"/api/jobs/{job_id}/pause", json={}).status_code == 200
    assert client.post(f"/api/jobs/{job_id}/resume", json={}).status_code == 200
    assert client.post(f"/api/jobs/{job_id}/resume", json={}).status_code == 200
    assert wait_job(client, job_id)["status"] == "completed"
    types = [e["type"] for e in client.get(f"/api/jobs/{job_id}/events").json()]
    assert types.count("JobPaused") == 1 and types.count("JobResumed") == 1


# --- stuck jobs ----------------------------------------------------------------------


def test_a_job_without_progress_is_flagged_stuck(client: httpx.Client) -> None:
    job_id = execute(client, "chain", {"delay": 3.0})
    wait_for(client, job_id, lambda j: step_status(j, "a") == "running")
    time.sleep(1.5)
    listed = client.get("/api/jobs", params={"workspace": "main", "task_name": "chain"}).json()
    assert next(j for j in listed if j["job_id"] == job_id)["stuck"] is True
    metrics = client.get("/metrics").text
    gauge = [line for line in metrics.splitlines() if line.startswith("partitur_jobs_stuck ")]
    assert gauge and float(gauge[0].split()[1]) >= 1
    wait_job(client, job_id)
    listed = client.get("/api/jobs", params={"workspace": "main", "task_name": "chain"}).json()
    assert next(j for j in listed if j["job_id"] == job_id)["stuck"] is False


# --- dry run -------------------------------------------------------------------------


def test_dry_run_renders_what_it_can_and_records_nothing(client: httpx.Client) -> None:
    before = client.get("/api/jobs").headers["X-Total-Count"]
    r = client.post("/api/workspaces/main/tasks/plan/dry-run",
                    json={"input": {"go": "true", "things": ["x", "y", "z"], "name": "Ann"}})
    assert r.status_code == 200, r.text
    plan = r.json()
    steps = {s["step"]: s for s in plan["steps"]}
    assert plan["input"]["go"] is True
    assert steps["first"]["action"] == "run"
    assert steps["first"]["input"] == {"greeting": "Hello Ann"}
    assert steps["gated"]["action"] == "run" and steps["gated"]["when"] is True
    assert steps["loop"]["action"] == "expand"
    assert steps["loop"]["items"] == ["x", "y", "z"]
    assert [i["input"] for i in steps["loop"]["instances"]] == [
        {"x": "item x of 3"}, {"x": "item y of 3"}, {"x": "item z of 3"}]
    assert steps["uses-output"]["input"] is None
    assert steps["uses-output"]["input_needs"] == ["first"]
    assert steps["decides-later"]["action"] == "at_run_time"
    assert steps["decides-later"]["needs"] == ["first"]
    # Secrets are masked: the workspace secret and the secret input field.
    assert steps["secretive"]["input"] == {"auth": "Bearer ••••••", "pw": "••••••"}
    assert plan["input"]["password"] == "••••••"
    assert "s3cr3t" not in r.text and "hunter2" not in r.text
    assert client.get("/api/jobs").headers["X-Total-Count"] == before


def test_dry_run_skips_on_false_when_and_empty_loop(client: httpx.Client) -> None:
    r = client.post("/api/workspaces/main/tasks/plan/dry-run",
                    json={"input": {"things": []}})
    steps = {s["step"]: s for s in r.json()["steps"]}
    assert steps["gated"]["action"] == "skip"
    assert steps["gated"]["reason"] == "when was false (rendered: False)"
    assert steps["after-gated"]["action"] == "skip"
    assert steps["loop"]["action"] == "skip" and steps["loop"]["reason"] == "for_each is empty"


def test_dry_run_rejects_bad_input_like_execute(client: httpx.Client) -> None:
    r = client.post("/api/workspaces/main/tasks/echo/dry-run",
                    json={"input": {"count": "many", "nope": 1}})
    assert r.status_code == 400
    text = r.text
    assert "msg" in text and "count" in text and "nope" in text
    r = client.post("/api/workspaces/main/tasks/missing/dry-run", json={})
    assert r.status_code == 404


# --- diff and rerun with an edited input ---------------------------------------------


def test_rerun_with_edited_input_and_diff(client: httpx.Client) -> None:
    first = execute(client, "echo", {"msg": "one", "count": 1})
    assert wait_job(client, first)["status"] == "completed"
    r = client.post(f"/api/jobs/{first}/rerun", json={"input": {"msg": "two", "count": 1}})
    assert r.status_code == 200, r.text
    second = r.json()["job_id"]
    job = wait_job(client, second)
    assert job["input"]["msg"] == "two" and job["retry_of_job_id"] == first
    r = client.get(f"/api/jobs/{first}/diff/{second}")
    assert r.status_code == 200, r.text
    diff = r.json()
    assert diff["a"] == first and diff["b"] == second and diff["same_task"] is True
    assert diff["input"]["changes"] == [{"path": "msg", "a": "one", "b": "two"}]
    steps = {s["step"]: s for s in diff["steps"]}
    assert steps["say"]["output_changed"] is True
    assert steps["say"]["output"]["changes"] == [{"path": "said", "a": "one", "b": "two"}]
    assert steps["tail"]["output_changed"] is False
    assert steps["say"]["status"] == {"a": "completed", "b": "completed"}
    assert steps["say"]["duration"]["a"] is not None
    assert diff["summary"]["steps_with_other_output"] == ["say"]
    # An edited input is validated like any other.
    bad = client.post(f"/api/jobs/{first}/rerun", json={"input": {"count": "x"}})
    assert bad.status_code == 400
    assert client.get(f"/api/jobs/{first}/diff/{first}").status_code == 404
    missing = "0190c0de-0000-7000-8000-000000000000"
    assert client.get(f"/api/jobs/{first}/diff/{missing}").status_code == 404


def test_routes_are_in_openapi(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/jobs/{id}/explain", "/api/jobs/{id}/pause", "/api/jobs/{id}/resume",
                 "/api/jobs/{a}/diff/{b}", "/api/workspaces/{ws}/tasks/{name}/dry-run"):
        assert path in paths
