"""PostgreSQL restarts in the middle of a run (issue 7, fault tests).

A job of several slow steps runs on a remote worker while
- every backend connected to the test's database on the shared server is terminated
  (`pg_terminate_backend`, what a restart does to its clients), twice;
- a PostgreSQL server of the test's own (`private_pg`) is really stopped, kept down for
  a moment, and started again.
The server and worker reconnect, the job finishes with every step in its first attempt,
and the invariant checker finds nothing acknowledged lost or duplicated.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from harness import ServerProcess, pg_base_url, run_sync
from invariants import check_invariants
from private_pg import private_postgres
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
                events = client.get(f"/api/jobs/{job_id}/events").json()
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
                              acknowledged_events={job_id: events},
                              unique_lines=r"tick \d+$"))


def test_job_survives_a_real_postgres_restart(
        make_server: Callable[..., ServerProcess], tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "main.yaml").write_text(textwrap.dedent(WORKSPACE), "utf-8")
    with private_postgres() as pg:
        server = make_server(workspaces={"w": ws},
                             settings=remote_settings(timeout=5.0, db={"url": pg.url}))
        worker = WorkerProcess(tmp_path / "worker", server.url)
        try:
            with httpx.Client(base_url=server.url, timeout=15) as client:
                job_id = client.post("/api/workspaces/w/tasks/chain/execute",
                                     json={}).json()["job_id"]
                wait_for(lambda: any(x["line"] == "two tick 5" for x in lines(client, job_id)),
                         30, "step two to tick")
                acknowledged = [(n, x["line"]) for n, x in enumerate(lines(client, job_id), 1)]
                events = client.get(f"/api/jobs/{job_id}/events").json()
                # Mid-step: stop the database, keep it down while the step goes on, start it.
                pg.stop()
                assert client.get(f"/api/jobs/{job_id}").status_code >= 500
                time.sleep(2.0)  # the outage
                pg.start()
                done = wait_job(client, job_id, timeout=60)
                assert done["status"] == "completed", done
                for name in ("one", "two", "three"):
                    assert step(done, name)["attempt"] == 1
                texts = [x["line"] for x in lines(client, job_id)]
                for name in ("one", "two", "three"):
                    assert texts.count(f"{name} tick 15") == 1
        finally:
            worker.close()
            server.close()
        run_sync(check_invariants(pg.url, acknowledged_jobs=[job_id],
                                  acknowledged_lines={job_id: acknowledged},
                                  acknowledged_events={job_id: events},
                                  unique_lines=r"tick \d+$"))
