"""Fault scenarios with real worker processes: kill -9 and SIGSTOP past the lease.

Each scenario ends with the invariant checker (tests/e2e/invariants.py).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess, run_sync
from invariants import check_invariants
from worker_procs import (
    FIXTURE,
    WorkerProcess,
    group_alive,
    lines,
    pid_alive,
    remote_settings,
    step,
    wait_for,
    wait_job,
)

pytestmark = pytest.mark.e2e


def _ticking(client: httpx.Client, job_id: str, n: int = 5) -> None:
    wait_for(lambda: sum(1 for x in lines(client, job_id) if x["line"].startswith("tick "))
             >= n, 20, "ticks")


def _execute(client: httpx.Client, task: str) -> str:
    job_id: str = client.post(f"/api/workspaces/w/tasks/{task}/execute", json={}).json()["job_id"]
    return job_id


def _check(server: ServerProcess, job_id: str,
           events: list[dict[str, Any]] | None = None) -> None:
    run_sync(check_invariants(f"sqlite:///{server.tmp_dir / 'partitur.db'}",
                              logs_dir=server.tmp_dir / "logs", acknowledged_jobs=[job_id],
                              acknowledged_events={job_id: events or []},
                              unique_lines=r"^tick \d+$"))


def test_kill_9_worker_mid_step_fails_it_as_lost(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings(timeout=1.5))
    worker = WorkerProcess(tmp_path / "a", server.url)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            job_id = _execute(client, "slow")
            _ticking(client, job_id)
            acknowledged = lines(client, job_id)
            events = client.get(f"/api/jobs/{job_id}/events").json()
            # Kill the worker outright, mid-step.
            worker.signal(signal.SIGKILL)
            done = wait_job(client, job_id, timeout=20)
            tick = step(done, "tick")
            assert done["status"] == "failed"
            assert tick["status"] == "failed" and tick["error_kind"] == "worker_lost"
            # Nothing acknowledged was lost.
            after = {(x["line"], x["ts"]) for x in lines(client, job_id)}
            assert {(x["line"], x["ts"]) for x in acknowledged} <= after
    finally:
        worker.close()
    _check(server, job_id, events)


def test_lost_worker_step_reruns_where_on_lost(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings(timeout=1.5))
    first = WorkerProcess(tmp_path / "a", server.url)
    second = None
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            job_id = _execute(client, "slow-rerun")
            _ticking(client, job_id)
            first.signal(signal.SIGKILL)
            second = WorkerProcess(tmp_path / "b", server.url)
            done = wait_job(client, job_id, timeout=25)
            assert done["status"] == "completed", [
                x["line"] for x in lines(client, job_id) if x["step"] == "_server"]
            assert step(done, "tick")["attempt"] == 2
            assert "attempt 2 done" in [x["line"] for x in lines(client, job_id)]
    finally:
        first.close()
        if second is not None:
            second.close()
    _check(server, job_id)


def test_stopped_worker_past_its_lease_is_refused_and_its_step_killed(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings(timeout=1.5))
    worker = WorkerProcess(tmp_path / "a", server.url, concurrency=1)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            job_id = _execute(client, "slow-rerun")
            _ticking(client, job_id)
            marker = tmp_path / "a" / "cache" / "artifacts" / job_id / "tick" / "pid"
            step_pid = int(marker.read_text().strip())
            # Freeze the worker past its lease: the step is declared lost, attempt 2 queued.
            worker.signal(signal.SIGSTOP)
            wait_for(lambda: step(client.get(f"/api/jobs/{job_id}").json(), "tick")["attempt"]
                     == 2, 15, "attempt 2")
            assert pid_alive(step_pid)  # the frozen worker's step still runs
            assert group_alive(step_pid)  # the step's shell leads its own process group
            # Thaw it: its lease is refused (409), so it kills the step's process group,
            # reports nothing, and goes on to run attempt 2.
            worker.signal(signal.SIGCONT)
            wait_for(lambda: not pid_alive(step_pid), 10, "the stale step to be killed")
            wait_for(lambda: not group_alive(step_pid), 10, "the stale step's group to end")
            done = wait_job(client, job_id, timeout=25)
            assert done["status"] == "completed"
            events = client.get(f"/api/jobs/{job_id}/events").json()
            ends = [(e["type"], e["data"].get("attempt")) for e in events
                    if e["type"] in ("StepCompleted", "StepFailed")]
            assert ends == [("StepFailed", 1), ("StepCompleted", 2)], ends
            failed = next(e for e in events if e["type"] == "StepFailed")
            assert failed["data"]["kind"] == "worker_lost"
            texts = [x["line"] for x in lines(client, job_id)]
            assert "attempt 1 done" not in texts and "attempt 2 done" in texts
            assert "refused" in worker.log_text()
    finally:
        worker.close()
    _check(server, job_id)
