"""`partitur jobs`, `logs [--follow]` and `cancel` against a real server process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from harness import ServerProcess

WS = Path(__file__).parent.parent / "fixtures" / "cli_ws"
EXAMPLES = Path(__file__).parent.parent.parent / "workspaces" / "default"


def partitur(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args, "--server", server.url],
        capture_output=True, text=True, timeout=60,
    )


def _execute(server: ServerProcess, ws: str, task: str, data: dict[str, object]) -> str:
    response = httpx.post(f"{server.url}/api/workspaces/{ws}/tasks/{task}/execute",
                          json={"input": data}, timeout=10)
    assert response.status_code == 200, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def _status(server: ServerProcess, job_id: str) -> str:
    status: str = httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=10).json()["status"]
    return status


def test_jobs_logs_and_cancel(make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    server = make_server(workspaces={"default": EXAMPLES, "cli": WS})
    done = _execute(server, "default", "hello-world", {"name": "Ada"})
    deadline = time.monotonic() + 20
    while _status(server, done) != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # The job list names the job, newest first.
    listed = partitur(server, "jobs", "--workspace", "default")
    assert listed.returncode == 0, listed.stderr
    assert done in listed.stdout and "completed" in listed.stdout

    # Logs of a finished job, all steps and one step.
    logs = partitur(server, "logs", done)
    assert logs.returncode == 0, logs.stderr
    assert "say-hello | Hello Ada" in logs.stdout
    notes = partitur(server, "logs", done, "--step", "_server")
    assert "job completed" in notes.stdout and "Hello Ada" not in notes.stdout

    # A long job: follow it, cancel it from another process, and the follower ends.
    long_job = _execute(server, "cli", "long", {"pidfile": str(tmp_path / "pid")})
    follower = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "logs", long_job, "--follow", "--server", server.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    while not (tmp_path / "pid").exists():
        assert time.monotonic() < deadline + 20
        time.sleep(0.05)
    cancelled = partitur(server, "cancel", long_job)
    assert cancelled.returncode == 0, cancelled.stderr
    out, err = follower.communicate(timeout=30)
    assert "sleeper | started" in out
    assert f"job {long_job} cancelled" in err
    assert follower.returncode == 1

    # Cancelling an ended job is refused with the server's reason.
    again = partitur(server, "cancel", long_job)
    assert again.returncode == 1 and "409" in again.stderr
