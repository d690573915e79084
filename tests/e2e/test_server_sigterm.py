"""SIGTERM a server in the middle of steps (issue 4, serving): running steps get
`shutdown.grace` seconds, then the server exits. A step that finishes within the grace is
recorded completed; one that does not is handled on the next start as after a crash:
failed with kind `worker_lost`, or run again where `retry.on_lost: true`.
"""

from __future__ import annotations

import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from harness import ServerProcess, run_sync
from invariants import check_invariants
from worker_procs import lines, pid_alive, step, wait_for, wait_job

pytestmark = pytest.mark.e2e

WORKSPACE = """
tasks:
  three:
    flow:
      quick:
        type: shell
        interpreter: sh
        script: |
          echo "quick started"
          sleep 1.5
          echo "quick done"
      stuck:
        type: shell
        interpreter: sh
        script: |
          echo $$ > "$ARTIFACTS_DIR/pid"
          echo "stuck started"
          sleep 60
      again:
        type: shell
        interpreter: sh
        retry: { max_attempts: 2, on_lost: true }
        script: |
          echo "again attempt $PARTITUR_ATTEMPT"
          if [ "$PARTITUR_ATTEMPT" = "1" ]; then sleep 60; fi
"""


def test_sigterm_gives_running_steps_the_grace_then_a_restart_recovers(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "main.yaml").write_text(textwrap.dedent(WORKSPACE), "utf-8")
    server = make_server(workspaces={"ws": ws}, settings={
        "workers": {"local": {"concurrency": 4}}, "shutdown": {"grace": "3s"}})
    with httpx.Client(base_url=server.url, timeout=10) as client:
        job_id = client.post("/api/workspaces/ws/tasks/three/execute",
                             json={}).json()["job_id"]
        wait_for(lambda: {"quick started", "stuck started", "again attempt 1"}
                 <= {x["line"] for x in lines(client, job_id)}, 15, "all three steps")
        # A line's seq is its 1-based position in the job's log.
        acknowledged = [(n, x["line"]) for n, x in enumerate(lines(client, job_id), 1)]
        assert len(acknowledged) >= 3
        artifacts = server.tmp_dir
        stuck_pid = int(next(artifacts.rglob("pid")).read_text())
    # Stop the server mid-step: it waits the grace, then exits.
    began = time.monotonic()
    # uvicorn re-raises the signal once its graceful shutdown is done.
    assert server.stop(signal.SIGTERM, timeout=20) in (0, -signal.SIGTERM)
    took = time.monotonic() - began
    assert 2.5 <= took < 12, f"shutdown took {took:.1f}s (grace 3s)"
    # The step process that outlived the grace was stopped with the server.
    wait_for(lambda: not pid_alive(stuck_pid), 5, "the stuck step's process to end")

    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        done = wait_job(client, job_id, timeout=30)
        # Finished within the grace: recorded completed before the server exited.
        assert step(done, "quick")["status"] == "completed"
        assert step(done, "quick")["attempt"] == 1
        # Still running at the end of the grace: lost, as after a crash.
        assert step(done, "stuck")["status"] == "failed"
        assert step(done, "stuck")["error_kind"] == "worker_lost"
        assert step(done, "again")["status"] == "completed"
        assert step(done, "again")["attempt"] == 2
        assert done["status"] == "failed"
        events = client.get(f"/api/jobs/{job_id}/events").json()
        completed = [e["data"]["step"] for e in events if e["type"] == "StepCompleted"]
        assert completed == ["quick", "again"]
        texts = [x["line"] for x in lines(client, job_id)]
        assert "quick done" in texts and "again attempt 2" in texts
    run_sync(check_invariants(server.config["db"]["url"], logs_dir=server.tmp_dir / "logs",
                              acknowledged_jobs=[job_id],
                              acknowledged_lines={job_id: acknowledged}))
