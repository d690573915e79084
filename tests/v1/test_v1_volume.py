"""`webhooks/deliveries` filters by job and webhook, and `jobs/list` by status, in the
store query, so the right objects are found however many others the tenant has (the
rows are filled straight into the server's database, the queries go over HTTP)."""

from __future__ import annotations

import sqlite3

import httpx
from harness import ServerProcess
from v1_helpers import call, deploy, wait_job

from engine.clock import new_job_id
from engine.cloudtenancy import DEFAULT_TENANT
from engine.store.cloud import SQLITE_INSERT, CloudObject
from engine.store.cloud import _params as row_params

OTHERS = 6000


def delivery(job_id: str, webhook_id: str | None, n: int) -> CloudObject:
    return CloudObject("delivery", new_job_id(), DEFAULT_TENANT, 1e9 + n, 1e9 + n, {
        "msg_id": f"msg_{n}", "job_id": job_id, "event": "job.completed",
        "url": "http://127.0.0.1:9/hook", "secret": None, "webhook_id": webhook_id,
        "body": "{}", "status": "delivered", "attempts": [], "next_attempt_at": None,
        "first_attempt_at": None}, name=f"{job_id}\n{webhook_id or 'callback'}\n{n}")


def fill(server: ServerProcess, rows: list[CloudObject]) -> None:
    with sqlite3.connect(server.tmp_dir / "partitur.db", timeout=60) as conn:
        conn.executemany(SQLITE_INSERT, [row_params(r) for r in rows])


def test_deliveries_filter_past_thousands_of_newer_ones(
        v1_server: ServerProcess, v1: httpx.Client) -> None:
    # The wanted deliveries are the oldest; thousands of others come after them.
    wanted = [delivery("job-wanted", f"hook-{n % 2}", n) for n in range(7)]
    fill(v1_server, wanted)
    fill(v1_server, [delivery(f"job-{n % 50}", f"hook-{n % 3}", 100 + n)
                     for n in range(OTHERS)])
    found = call(v1, "webhooks/deliveries", {"job_id": "job-wanted", "limit": 500})
    assert [d["id"] for d in found["deliveries"]] == [d.id for d in reversed(wanted)]
    by_both = call(v1, "webhooks/deliveries",
                   {"job_id": "job-wanted", "webhook_id": "hook-1"})["deliveries"]
    assert [d["id"] for d in by_both] == [d.id for d in reversed(wanted)
                                          if d.data["webhook_id"] == "hook-1"]
    # `limit` still caps the answer, newest first.
    hook = call(v1, "webhooks/deliveries", {"webhook_id": "hook-2", "limit": 3})
    assert len(hook["deliveries"]) == 3
    assert all(d["webhook_id"] == "hook-2" for d in hook["deliveries"])
    assert call(v1, "webhooks/deliveries", {"job_id": "job-none"})["deliveries"] == []


def test_jobs_list_by_status_past_thousands_of_newer_jobs(
        v1_server: ServerProcess, v1: httpx.Client) -> None:
    deploy(v1)
    done = call(v1, "jobs/create", {"workflow": "greet", "params": {"name": "a"}})["job_id"]
    failed = call(v1, "jobs/create", {"workflow": "boom", "params": {}})["job_id"]
    assert wait_job(v1, done)["status"] == "completed"
    assert wait_job(v1, failed)["status"] == "failed"
    # Thousands of newer cloud job records whose engine job is not there (never listed).
    fill(v1_server, [CloudObject("job", new_job_id(), DEFAULT_TENANT, 2e9, 2e9,
                                 {"workflow": "greet", "deployment_id": "d"})
                     for _ in range(OTHERS)])
    got = call(v1, "jobs/list", {"status": "completed", "limit": 100})
    assert [j["job_id"] for j in got["jobs"]] == [done] and got["next_cursor"] is None
    got = call(v1, "jobs/list", {"status": "failed", "limit": 1})
    assert [j["job_id"] for j in got["jobs"]] == [failed] and got["next_cursor"] is None
    assert call(v1, "jobs/list", {"status": "queued"})["jobs"] == []
    both = call(v1, "jobs/list", {"limit": 1})
    assert [j["job_id"] for j in both["jobs"]] == [failed]
    rest = call(v1, "jobs/list", {"limit": 5, "cursor": both["next_cursor"]})
    assert [j["job_id"] for j in rest["jobs"]] == [done]
