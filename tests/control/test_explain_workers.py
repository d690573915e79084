"""`explain` with remote workers, through a real server and real `partitur worker`
processes: a ready step that no online worker can take is `no worker with tags {…} is
online`, through the API and `partitur explain`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from harness import ServerProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from worker_procs import (
    FIXTURE,
    WorkerProcess,
    remote_settings,
    step,
    wait_for,
    wait_job,
)


def reasons(client: httpx.Client, job_id: str) -> dict[str, dict[str, Any]]:
    r = client.get(f"/api/jobs/{job_id}/explain")
    assert r.status_code == 200, r.text
    return {entry["step"]: entry for entry in r.json()["steps"]}


def test_explain_names_the_tags_no_online_worker_has(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = make_server(workspaces={"w": FIXTURE}, settings=remote_settings(timeout=30.0))
    with httpx.Client(base_url=server.url, timeout=10) as client:
        job_id = client.post("/api/workspaces/w/tasks/hello/execute",
                             json={}).json()["job_id"]
        wait_for(lambda: step(client.get(f"/api/jobs/{job_id}").json(),
                              "greet")["status"] == "ready", 20, "greet ready")
        # No worker at all yet.
        why = reasons(client, job_id)
        assert why["greet"]["code"] == "no_worker"
        assert why["greet"]["reason"] == "no worker is online"
        assert why["tagged"]["code"] == "waiting_for_dependency"

        # An untagged worker runs greet; the gpu-tagged step has no worker that fits.
        plain = WorkerProcess(tmp_path / "plain", server.url)
        try:
            wait_for(lambda: step(client.get(f"/api/jobs/{job_id}").json(),
                                  "tagged")["status"] == "ready", 30, "tagged ready")
            why = reasons(client, job_id)
            assert list(why) == ["tagged"]
            assert why["tagged"]["code"] == "no_worker", why
            assert why["tagged"]["reason"] == "no worker with tags {gpu} is online"
            assert why["tagged"]["tags"] == ["gpu"]
            printed = subprocess.run(
                [sys.executable, "-m", "server.cli", "explain", job_id, "--server", server.url],
                capture_output=True, text=True, timeout=60)
            assert printed.returncode == 0, printed.stderr
            assert "no worker with tags {gpu} is online" in printed.stdout

            # A worker with the tags comes online: the step is merely waiting, then runs.
            gpu = WorkerProcess(tmp_path / "gpu", server.url, tags="gpu,linux")
            try:
                assert wait_job(client, job_id)["status"] == "completed"
            finally:
                gpu.close()
        finally:
            plain.close()
        assert reasons(client, job_id) == {}
