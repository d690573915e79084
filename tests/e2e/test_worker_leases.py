"""Leases through a real server (issue 7, leases and fencing).

- A stale lease token is answered 409 on every call made under it (heartbeat, started,
  logs, result) and changes nothing: no event, no log line, the next attempt untouched.
- A server restart is not a worker death: a real worker whose server is killed and
  started again, after longer than the heartbeat timeout, keeps its step, which ends
  completed in its first attempt.
Both end with the invariant checker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess, run_sync
from invariants import check_invariants
from worker_procs import (
    FIXTURE,
    TOKEN,
    WorkerProcess,
    lines,
    remote_settings,
    step,
    wait_for,
    wait_job,
)

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = client.get(f"/api/jobs/{job_id}/events").json()
    return events


def _claim(client: httpx.Client, worker_id: str) -> dict[str, Any]:
    r = client.post("/worker/claim", json={"worker_id": worker_id, "timeout": 20},
                    headers=AUTH)
    assert r.status_code == 200, r.text
    claimed: dict[str, Any] = r.json()
    return claimed


def _check(server: ServerProcess, job_id: str) -> None:
    run_sync(check_invariants(f"sqlite:///{server.tmp_dir / 'partitur.db'}",
                              logs_dir=server.tmp_dir / "logs", acknowledged_jobs=[job_id]))


def test_a_stale_lease_is_refused_and_changes_nothing(
        make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings(timeout=1.0))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        worker_id = client.post("/worker/register", json={"name": "manual", "concurrency": 1},
                                headers=AUTH).json()["worker_id"]
        job_id = client.post("/api/workspaces/w/tasks/slow-rerun/execute",
                             json={}).json()["job_id"]
        first = _claim(client, worker_id)
        assert (first["job_id"], first["step"], first["attempt"]) == (job_id, "tick", 1)
        lease = first["lease"]
        prefix = f"/worker/leases/{lease}"
        # While the lease holds, every call under it is accepted.
        assert client.post(f"{prefix}/started", json={"pid": None}, headers=AUTH).status_code \
            == 200
        r = client.post(f"{prefix}/logs", headers=AUTH, json={
            "offset": 0, "lines": [{"ts": 1.0, "stream": "stdout", "line": "tick 1"}]})
        assert r.status_code == 200 and r.json() == {"next": 1}
        assert client.post(f"{prefix}/heartbeat", json={}, headers=AUTH).json() == \
            {"cancel": False}
        # No more heartbeats: the lease lapses, attempt 1 is lost, attempt 2 is queued.
        wait_for(lambda: step(client.get(f"/api/jobs/{job_id}").json(), "tick")["attempt"]
                 == 2, 20, "attempt 2")
        events = _events(client, job_id)
        logged = lines(client, job_id)
        assert [e["data"]["kind"] for e in events if e["type"] == "StepFailed"] == \
            ["worker_lost"]
        # Every call under the stale lease: 409, and nothing changes.
        calls = [("heartbeat", {}), ("started", {"pid": 123}),
                 ("logs", {"offset": 1, "lines": [{"ts": 2.0, "stream": "stdout",
                                                    "line": "late line"}]}),
                 ("result", {"status": "completed", "output": {"late": True}})]
        for name, body in calls:
            r = client.post(f"{prefix}/{name}", json=body, headers=AUTH)
            assert r.status_code == 409, (name, r.status_code, r.text)
        assert _events(client, job_id) == events
        assert lines(client, job_id) == logged
        tick = step(client.get(f"/api/jobs/{job_id}").json(), "tick")
        assert (tick["status"], tick["attempt"]) == ("ready", 2)
        # Attempt 2 gets a new lease; the old one still cannot touch it.
        second = _claim(client, worker_id)
        assert second["attempt"] == 2 and second["lease"] != lease
        r = client.post(f"{prefix}/result", json={"status": "completed"}, headers=AUTH)
        assert r.status_code == 409
        assert step(client.get(f"/api/jobs/{job_id}").json(), "tick")["status"] == "running"
        r = client.post(f"/worker/leases/{second['lease']}/result",
                        json={"status": "completed", "output": {"n": 2}}, headers=AUTH)
        assert r.status_code == 200
        done = wait_job(client, job_id)
        assert done["status"] == "completed"
        ends = [(e["type"], e["data"]["attempt"]) for e in _events(client, job_id)
                if e["type"] in ("StepCompleted", "StepFailed")]
        assert ends == [("StepFailed", 1), ("StepCompleted", 2)]
        assert "late line" not in [x["line"] for x in lines(client, job_id)]
    _check(server, job_id)


def test_a_server_restart_is_not_a_worker_death(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    timeout = 1.5
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings(timeout=timeout))
    worker = WorkerProcess(tmp_path / "w", server.url, concurrency=1)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            job_id = client.post("/api/workspaces/w/tasks/slow/execute",
                                 json={}).json()["job_id"]
            wait_for(lambda: sum(x["line"].startswith("tick ") for x in lines(client, job_id))
                     >= 5, 20, "ticks")
            # The server dies and stays away for longer than a lease; the worker, which
            # only lost its server, keeps running the step.
            server.kill()
            wait_for(lambda: "failed" in worker.log_text(), 20, "the worker to miss a call")
            pid = int((tmp_path / "w" / "cache" / "artifacts" / job_id / "tick" / "pid")
                      .read_text().strip())
            time.sleep(2 * timeout)
            os.kill(pid, 0)  # the step still runs
            server.start()
            done = wait_job(client, job_id, timeout=60)
            assert done["status"] == "completed", done
            tick = step(done, "tick")
            assert (tick["status"], tick["attempt"]) == ("completed", 1)
            assert [e["type"] for e in _events(client, job_id) if e["type"] in
                    ("StepFailed", "StepRetryScheduled")] == []
            texts = [x["line"] for x in lines(client, job_id)]
            assert texts.count("finished") == 1 and "tick 400" in texts
    finally:
        worker.close()
    _check(server, job_id)


def test_a_step_refused_while_its_job_was_paused_is_claimed_after_resume(
        make_server: Callable[..., ServerProcess]) -> None:
    # A short heartbeat timeout: the lease sweeper (and its re-queue) runs often.
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings(timeout=4.0))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        worker_id = client.post("/worker/register", json={
            "name": "manual", "tags": ["gpu"], "concurrency": 1}, headers=AUTH).json()["worker_id"]
        job_id = client.post("/api/workspaces/w/tasks/hello/execute", json={}).json()["job_id"]
        # The step is queued; the job is paused before any worker claims it.
        assert client.post(f"/api/jobs/{job_id}/pause", json={}).status_code == 200
        r = client.post("/worker/claim", json={"worker_id": worker_id, "timeout": 1},
                        headers=AUTH)
        assert r.status_code == 204  # a paused job's step is not handed out
        assert step(client.get(f"/api/jobs/{job_id}").json(), "greet")["status"] == "ready"
        # Resumed, the same attempt is handed out again.
        assert client.post(f"/api/jobs/{job_id}/resume", json={}).status_code == 200
        held = _claim(client, worker_id)
        assert (held["job_id"], held["step"], held["attempt"]) == (job_id, "greet", 1)
        # Paused while greet runs: greet's result is recorded, the next step is not
        # handed out until the resume.
        assert client.post(f"/api/jobs/{job_id}/pause", json={}).status_code == 200
        r = client.post(f"/worker/leases/{held['lease']}/result",
                        json={"status": "completed"}, headers=AUTH)
        assert r.status_code == 200
        assert step(client.get(f"/api/jobs/{job_id}").json(), "greet")["status"] == "completed"
        r = client.post("/worker/claim", json={"worker_id": worker_id, "timeout": 3},
                        headers=AUTH)
        assert r.status_code == 204
        assert step(client.get(f"/api/jobs/{job_id}").json(), "tagged")["status"] in \
            ("pending", "ready")
        assert client.post(f"/api/jobs/{job_id}/resume", json={}).status_code == 200
        held = _claim(client, worker_id)
        assert (held["step"], held["attempt"]) == ("tagged", 1)
        r = client.post(f"/worker/leases/{held['lease']}/result",
                        json={"status": "completed"}, headers=AUTH)
        assert r.status_code == 200
        assert wait_job(client, job_id)["status"] == "completed"
    _check(server, job_id)
