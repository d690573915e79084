"""A server with no embedded workers and real `partitur worker` processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

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


def test_remote_worker_runs_steps_with_tags_and_workspace_files(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings())
    plain = WorkerProcess(tmp_path / "plain", server.url)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            job_id = client.post("/api/workspaces/w/tasks/hello/execute",
                                 json={}).json()["job_id"]
            # The untagged worker runs `greet`, never the `gpu`-tagged step.
            wait_for(lambda: step(client.get(f"/api/jobs/{job_id}").json(),
                                  "greet")["status"] == "completed", 20, "greet")
            time.sleep(0.5)
            assert step(client.get(f"/api/jobs/{job_id}").json(), "tagged")["status"] == "ready"
            gpu = WorkerProcess(tmp_path / "gpu", server.url, tags="gpu,linux")
            try:
                done = wait_job(client, job_id)
            finally:
                gpu.close()
            assert done["status"] == "completed"
            text = [x["line"] for x in lines(client, job_id)]
            assert "hello from greet" in text
            assert "message from the workspace" in text  # the revision tarball
            assert "tagged ran" in text
            workers = client.get("/api/workers").json()
            assert {tuple(w["tags"]) for w in workers} >= {(), ("gpu", "linux")}
            gpu_id = next(w["worker_id"] for w in workers if w["tags"] == ["gpu", "linux"])
            detail = client.get(f"/api/workers/{gpu_id}").json()
            assert [s["step"] for s in detail["steps"]] == ["tagged"]
            assert detail["status"] in ("active", "offline")
    finally:
        plain.close()
    run_sync(check_invariants(f"sqlite:///{server.tmp_dir / 'partitur.db'}",
                              logs_dir=server.tmp_dir / "logs", acknowledged_jobs=[job_id]))


def test_worker_api_needs_the_token(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings())
    with httpx.Client(base_url=server.url, timeout=10) as client:
        body = {"name": "x", "tags": [], "concurrency": 1}
        assert client.post("/worker/register", json=body).status_code == 401
        assert client.post("/worker/register", json=body,
                           headers={"Authorization": "Bearer wrong"}).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = client.post("/worker/register", json=body, headers=auth)
        assert r.status_code == 200
        wid = r.json()["worker_id"]
        # An idle claim long-polls, then answers 204.
        t0 = time.monotonic()
        r = client.post("/worker/claim", json={"worker_id": wid, "timeout": 0.3}, headers=auth)
        assert r.status_code == 204 and time.monotonic() - t0 >= 0.25
        # A lease nobody holds is refused.
        r = client.post("/worker/leases/nope/result", json={"status": "completed"},
                        headers=auth)
        assert r.status_code == 409


def test_idle_worker_starts_new_work_within_milliseconds(
        make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings())
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=30) as client, \
            httpx.Client(base_url=server.url, timeout=30) as poller:
        wid = client.post("/worker/register", json={"name": "x", "concurrency": 1},
                          headers=auth).json()["worker_id"]
        import threading

        got: dict[str, float] = {}

        def poll() -> None:
            r = poller.post("/worker/claim", json={"worker_id": wid, "timeout": 10},
                            headers=auth)
            got["at"] = time.monotonic()
            got["status"] = r.status_code

        thread = threading.Thread(target=poll)
        thread.start()
        time.sleep(0.3)  # the claim is waiting
        t0 = time.monotonic()
        client.post("/api/workspaces/w/tasks/hello/execute", json={})
        sent = time.monotonic()
        thread.join(15)
        assert got["status"] == 200
        assert got["at"] - sent < 0.5, got["at"] - t0
