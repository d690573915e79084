"""PostgreSQL drops every connection in the middle of a run (issue 7, fault tests).

A real `pg_ctlcluster` restart would disturb the tests running in parallel on the same
server, so every backend connected to this test's database is terminated instead
(`pg_terminate_backend`, what a restart does to them), twice, while a job of several slow
steps runs on a remote worker. The server and worker reconnect, the job finishes, and
the invariant checker finds nothing acknowledged lost or duplicated.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from harness import ServerProcess, pg_base_url, run_sync
from invariants import check_invariants
from worker_procs import WorkerProcess, lines, remote_settings, step, wait_for, wait_job

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

WORKSPACE = """
tasks:
  chain:
    flow:
      one: &slow
        type: shell
        interpreter: sh
        script: |
          i=1
          while [ "$i" -le 15 ]; do echo "$PARTITUR_STEP tick $i"; i=$((i+1)); sleep 0.1; done
          echo 'OUTPUT: {"ok": true}'
      two: { <<: *slow, depends_on: [one] }
      three: { <<: *slow, depends_on: [two] }
"""


async def _terminate_all(db_url: str) -> int:
    """Terminate every backend connected to the database of `db_url`; how many."""
    name = urlsplit(db_url).path.lstrip("/")
    admin = await asyncpg.connect(pg_base_url(), timeout=5)
    try:
        killed = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
    finally:
        await admin.close()
    return len(killed)


def test_job_survives_postgres_dropping_every_connection(
        make_server: Callable[..., ServerProcess], pg_url: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "main.yaml").write_text(textwrap.dedent(WORKSPACE), "utf-8")
    server = make_server(workspaces={"w": ws},
                         settings=remote_settings(timeout=5.0, db={"url": pg_url}))
    worker = WorkerProcess(tmp_path / "worker", server.url)
    try:
        with httpx.Client(base_url=server.url, timeout=15) as client:
            job_id = client.post("/api/workspaces/w/tasks/chain/execute",
                                 json={}).json()["job_id"]
            acknowledged: list[tuple[int, str]] = []
            for running in ("one", "two"):
                # Mid-step: the step is printing; drop every connection to the database.
                wait_for(lambda r=running: any(x["line"] == f"{r} tick 5"  # type: ignore[misc]
                                               for x in lines(client, job_id)),
                         20, f"step {running} to tick")
                # A line's seq is its 1-based position in the job's log.
                acknowledged = [(n, x["line"]) for n, x in enumerate(lines(client, job_id), 1)]
                assert run_sync(_terminate_all(pg_url)) >= 1
            done = wait_job(client, job_id, timeout=40)
            assert done["status"] == "completed", done
            for name in ("one", "two", "three"):
                assert step(done, name)["attempt"] == 1
            texts = [x["line"] for x in lines(client, job_id)]
            for name in ("one", "two", "three"):
                assert texts.count(f"{name} tick 15") == 1
    finally:
        worker.close()
    run_sync(check_invariants(pg_url, acknowledged_jobs=[job_id],
                              acknowledged_lines={job_id: acknowledged},
                              unique_lines=r"tick \d+$"))
