"""kill -9 a server with a job running in a folder snapshot, edit the folder, start again.

At start, once recovery has pinned the unfinished job's revision, snapshots no job uses
(and half-made copies a crash left) are removed; the job's own revision stays until the
job ends, and the job runs that revision's files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess

pytestmark = pytest.mark.e2e

TASK = """
tasks:
  run:
    flow:
      go:
        type: shell
        interpreter: sh
        retry: {{ max_attempts: 3, on_lost: true }}
        script: |
          echo "$PARTITUR_ATTEMPT" >> "{started}"
          while [ ! -f "{gate}" ]; do sleep 0.05; done
          sh script.sh
"""


def _script(folder: Path, value: str) -> None:
    (folder / "script.sh").write_text(f"echo 'OUTPUT: {{\"v\": \"{value}\"}}'\n", "utf-8")


def _until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _revision(client: httpx.Client) -> str:
    [ws] = [w for w in client.get("/api/workspaces").json() if w["name"] == "main"]
    return str(ws["revision"])


def _snapshots(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def test_a_restart_after_kill_removes_unused_snapshots_and_keeps_a_running_jobs(
    make_server: Callable[..., ServerProcess], tmp_path: Path,
) -> None:
    folder = tmp_path / "ws"
    (folder / ".workflows").mkdir(parents=True)
    started, gate = tmp_path / "started", tmp_path / "gate"
    (folder / ".workflows" / "main.yaml").write_text(
        TASK.format(started=started, gate=gate), "utf-8")
    _script(folder, "old")
    server = make_server(workspaces={"main": folder})
    snaps = server.tmp_dir / "git" / "main" / "snap"
    with httpx.Client(base_url=server.url, timeout=30) as client:
        old = _revision(client)
        assert _snapshots(snaps) == {old}
        job_id = client.post("/api/workspaces/main/tasks/run/execute",
                             json={}).json()["job_id"]
        _until(lambda: started.exists() and started.read_text("utf-8").split() == ["1"],
               "the step to start")
    server.kill()

    # What a crash leaves: a snapshot of a revision whose job ended unseen, a half copy.
    stale = snaps / "0123456789abcdef"
    (stale / ".workflows").mkdir(parents=True)
    (snaps / ".take-crashed").mkdir()
    _script(folder, "new")  # edited while the server was down: a new current revision
    assert _snapshots(snaps) == {old, stale.name, ".take-crashed"}

    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        new = _revision(client)
        assert new != old
        # The stale snapshot and the half copy are gone; the job's revision stays.
        assert _snapshots(snaps) == {old, new}
        _until(lambda: started.read_text("utf-8").split() == ["1", "2"],
               "the lost step to run again")
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["status"] == "running" and job["revision"] == old
        assert _snapshots(snaps) == {old, new}

        gate.touch()
        job = _until(lambda: (j := client.get(f"/api/jobs/{job_id}").json())["status"]
                     in ("completed", "failed", "cancelled") and j, "the job to end")
        assert job["status"] == "completed", job
        assert job["output"] == {"go": {"v": "old"}}
        _until(lambda: _snapshots(snaps) == {new}, "the ended job's snapshot to go")
