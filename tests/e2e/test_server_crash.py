"""kill -9 the server in the middle of a step, start it again on the same config.

The job's event history must be intact, every log line written before the kill still
readable, the lost step failed with kind `worker_lost` (or re-run where `retry.on_lost`),
and the job must reach its end; then the invariant checker runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness import ServerProcess, run_sync
from invariants import check_invariants

pytestmark = pytest.mark.e2e
WORKSPACE = Path(__file__).resolve().parents[1] / "fixtures" / "api_workspaces" / "crash"


def _wait(client: httpx.Client, job_id: str, check: Callable[[dict[str, Any]], bool],
          timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if check(job):
            return job
        assert time.monotonic() < deadline, f"timed out; job is {job}"
        time.sleep(0.05)


def _lines(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    text = client.get(f"/api/jobs/{job_id}/logs").json()["logs"]
    return [orjson.loads(x) for x in text.splitlines()]


def _crash_mid_step(make_server: Callable[..., ServerProcess], task: str
                    ) -> tuple[ServerProcess, str, list[dict[str, Any]], list[dict[str, Any]]]:
    server = make_server(workspaces={"crash": WORKSPACE})
    with httpx.Client(base_url=server.url, timeout=10) as client:
        job_id = client.post(f"/api/workspaces/crash/tasks/{task}/execute",
                             json={}).json()["job_id"]
        # Let the step print a few lines, then kill the server outright.
        deadline = time.monotonic() + 15
        while sum(1 for x in _lines(client, job_id) if x["line"].startswith("tick ")) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        events_before = client.get(f"/api/jobs/{job_id}/events").json()
        lines_before = _lines(client, job_id)
    server.kill()
    server.start()
    return server, job_id, events_before, lines_before


def _check_invariants(server: ServerProcess, job_id: str,
                      events_before: list[dict[str, Any]]) -> None:
    run_sync(check_invariants(server.config["db"]["url"], logs_dir=server.tmp_dir / "logs",
                              acknowledged_jobs=[job_id],
                              acknowledged_events={job_id: events_before},
                              unique_lines=r"^tick \d+$"))


def _check_history(client: httpx.Client, job_id: str, events_before: list[dict[str, Any]],
                   lines_before: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events = client.get(f"/api/jobs/{job_id}/events").json()
    assert events[:len(events_before)] == events_before  # history intact, only appended to
    lines = _lines(client, job_id)
    assert lines[:len(lines_before)] == lines_before  # nothing written before the kill lost
    return events


def test_lost_step_fails_as_worker_lost(make_server: Callable[..., ServerProcess]) -> None:
    server, job_id, events_before, lines_before = _crash_mid_step(make_server, "slow-lost")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        job = _wait(client, job_id, lambda j: j["status"] in {"completed", "failed"})
        events = _check_history(client, job_id, events_before, lines_before)
        failed = [e for e in events if e["type"] == "StepFailed"]
        assert [(e["data"]["step"], e["data"]["kind"]) for e in failed] == [("tick", "worker_lost")]
        steps = {s["step_name"]: s for s in job["steps"]}
        assert steps["tick"]["status"] == "failed" and steps["tick"]["error_kind"] == "worker_lost"
        assert steps["before"]["status"] == "completed"
        assert steps["after"]["status"] == "completed"  # continue_on_failure still runs it
        assert job["status"] == "failed"
    _check_invariants(server, job_id, events_before)


def test_lost_step_is_rerun_with_on_lost(make_server: Callable[..., ServerProcess]) -> None:
    server, job_id, events_before, lines_before = _crash_mid_step(make_server, "slow-rerun")
    with httpx.Client(base_url=server.url, timeout=10) as client:
        job = _wait(client, job_id, lambda j: j["status"] in {"completed", "failed"})
        events = _check_history(client, job_id, events_before, lines_before)
        kinds = [e["data"]["kind"] for e in events if e["type"] == "StepFailed"]
        assert kinds == ["worker_lost"]
        assert any(e["type"] == "StepRetryScheduled" for e in events)
        assert job["status"] == "completed"
        (tick,) = job["steps"]
        assert tick["attempt"] == 2 and tick["status"] == "completed"
        assert "attempt 2 done" in [x["line"] for x in _lines(client, job_id)]
    _check_invariants(server, job_id, events_before)
