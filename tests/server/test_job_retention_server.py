"""`retention.job_days` through a real server: the leader's first sweep deletes a job
that ended 40 days ago (rows, log file, artifacts) and keeps a fresh one."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import httpx
from contract.store_streams import job_batches, record_job
from harness import ServerProcess

from engine.store.sqlite import SqliteStore

WORKFLOW = """
tasks:
  hello:
    flow:
      say:
        type: shell
        script: |
          echo hello
          echo kept > "$ARTIFACTS_DIR/kept.txt"
"""


async def seed_old_job(db: Path, job_id: str, ended_days_ago: float) -> None:
    store = SqliteStore(db)
    await store.open()
    try:
        created = time.time() - ended_days_ago * 86_400
        await record_job(store, job_id, job_batches(job_id, created_at=created))
        assert (await store.get_job(job_id)) is not None
    finally:
        await store.close()


def test_leader_sweep_deletes_jobs_that_ended_long_ago(tmp_path: Path) -> None:
    folder = tmp_path / "ws"
    (folder / ".workflows").mkdir(parents=True)
    (folder / ".workflows" / "main.yaml").write_text(textwrap.dedent(WORKFLOW))
    data = tmp_path / "server"
    data.mkdir()
    old = "old-job-40-days"
    asyncio.run(seed_old_job(data / "partitur.db", old, 40))
    (data / "logs").mkdir()
    (data / "logs" / f"{old}.jsonl").write_text("")
    (data / "artifacts" / old / "fetch").mkdir(parents=True)
    (data / "artifacts" / old / "fetch" / "report.txt").write_text("old")

    # Retention off: the old job is there, and a new one runs.
    with ServerProcess(data, workspaces={"ws": folder},
                       settings={"retention": {"job_days": 0}}) as server:
        with httpx.Client(base_url=server.url, timeout=15.0) as client:
            assert client.get(f"/api/jobs/{old}").json()["status"] == "completed"
            r = client.post("/api/workspaces/ws/tasks/hello/execute", json={"input": {}})
            assert r.status_code == 200, r.text
            recent = r.json()["job_id"]
            deadline = time.monotonic() + 60
            while client.get(f"/api/jobs/{recent}").json()["status"] != "completed":
                assert time.monotonic() < deadline, "the new job never completed"
                time.sleep(0.1)
            assert client.get("/api/jobs").headers["x-total-count"] == "2"

    # Retention 30 days: the leader's first sweep deletes the old job only.
    with ServerProcess(data, workspaces={"ws": folder},
                       settings={"retention": {"job_days": 30}}) as server:
        with httpx.Client(base_url=server.url, timeout=15.0) as client:
            deadline = time.monotonic() + 60
            while client.get(f"/api/jobs/{old}").status_code != 404 or (
                    data / "artifacts" / old).exists():  # files go just after the rows
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
            assert not (data / "logs" / f"{old}.jsonl").exists()
            assert not (data / "artifacts" / old).exists()
            listed = client.get("/api/jobs")
            assert listed.headers["x-total-count"] == "1"
            assert [j["job_id"] for j in listed.json()] == [recent]
            assert client.get(f"/api/jobs/{recent}").json()["status"] == "completed"
            assert "hello" in client.get(f"/api/jobs/{recent}/logs").text
            assert list((data / "artifacts" / recent).rglob("kept.txt"))
