"""Concurrency limits hold across two `partitur serve` replicas on one PostgreSQL.

Each replica runs its own jobs on its embedded executor and knows only those in memory;
the slots are rows of the shared database (`engine.store.slots`). Jobs of one key
(`limit: 1`) created alternately on both replicas never run at the same time, a job
created on one replica while the other one's job holds the slot waits (`pending`) and
starts once that job ends, another key is not held up, `policy: skip` skips a job
whose slot a job of the other replica holds, and `policy: cancel_previous` cancels the
job of the other replica that holds the slot.
"""

from __future__ import annotations

import itertools
import textwrap
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from harness import ServerProcess
from job_polling import start_job, wait_job

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

WORKSPACE = """
tasks:
  sync:
    input:
      customer: { type: string, required: true }
    concurrency: { key: "<< input.customer >>", limit: 1, policy: queue }
    flow:
      run: { type: shell, interpreter: sh, script: sleep 1 }
  sync-or-skip:
    input:
      customer: { type: string, required: true }
    concurrency: { key: "<< input.customer >>", limit: 1, policy: skip }
    flow:
      run: { type: shell, interpreter: sh, script: sleep 3 }
  deploy:
    input:
      customer: { type: string, required: true }
    concurrency: { key: "<< input.customer >>", limit: 1, policy: cancel_previous }
    flow:
      run: { type: shell, interpreter: sh, script: sleep 60 }
"""


def _execute(client: httpx.Client, task: str, customer: str) -> str:
    return start_job(client, "w", task, {"input": {"customer": customer}})


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _wait_running(client: httpx.Client, job_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/api/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline, f"job {job_id} never started"
        time.sleep(0.05)


def test_a_limit_of_one_per_key_holds_across_two_replicas(
        make_server: Callable[..., ServerProcess], pg_url: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "sync.yaml").write_text(textwrap.dedent(WORKSPACE), "utf-8")
    settings = {"db": {"url": pg_url}, "workers": {"local": {"concurrency": 4}}}
    one = make_server(workspaces={"w": ws}, settings=settings)
    two = make_server(workspaces={"w": ws}, settings=settings)
    with httpx.Client(base_url=one.url, timeout=15) as a, \
            httpx.Client(base_url=two.url, timeout=15) as b:
        first = _execute(a, "sync", "acme")
        _wait_running(a, first)
        # Replica two holds no job of `acme` in memory, yet its job waits for the slot.
        second = _execute(b, "sync", "acme")
        assert b.get(f"/api/jobs/{second}").json()["status"] == "pending"
        explained = b.get(f"/api/jobs/{second}/explain").json()
        assert explained["reason"] == f"concurrency slot held by job {first}", explained
        other = _execute(b, "sync", "globex")  # another key: not held up
        more = [_execute(client, "sync", "acme") for client in (a, b, a, b)]
        acme = [first, second, *more]
        owner = {job: (a if n % 2 == 0 else b) for n, job in enumerate(acme)}
        done = {job: wait_job(owner[job], job, 90.0) for job in acme}
        assert all(job["status"] == "completed" for job in done.values()), done
        globex = wait_job(b, other, 90.0)
        assert globex["status"] == "completed"
        # Never two `acme` jobs at once: their runs, ordered by start, do not overlap.
        spans = sorted((_when(j["started_at"]), _when(j["completed_at"]))
                       for j in done.values())
        for (_, ended), (started, _) in itertools.pairwise(spans):
            assert ended <= started, spans
        # `globex` ran while an `acme` job held its slot.
        g_start, g_end = _when(globex["started_at"]), _when(globex["completed_at"])
        assert any(s < g_end and g_start < e for s, e in spans), (globex, spans)

        # policy skip: the slot is held by a job of the other replica.
        holder = _execute(a, "sync-or-skip", "initech")
        _wait_running(a, holder)
        skipped = _execute(b, "sync-or-skip", "initech")
        assert wait_job(b, skipped, 90.0)["status"] == "skipped"
        assert wait_job(a, holder, 90.0)["status"] == "completed"
        # Once it ended, the key is free again on either replica.
        assert wait_job(b, _execute(b, "sync-or-skip", "initech"), 90.0)["status"] == "completed"


def test_cancel_previous_cancels_the_holder_on_the_other_replica(
        make_server: Callable[..., ServerProcess], pg_url: str, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "sync.yaml").write_text(textwrap.dedent(WORKSPACE), "utf-8")
    settings = {"db": {"url": pg_url}, "workers": {"local": {"concurrency": 4}}}
    one = make_server(workspaces={"w": ws}, settings=settings)
    two = make_server(workspaces={"w": ws}, settings=settings)
    with httpx.Client(base_url=one.url, timeout=15) as a, \
            httpx.Client(base_url=two.url, timeout=15) as b:
        first = _execute(a, "deploy", "acme")
        _wait_running(a, first)
        other = _execute(a, "deploy", "globex")  # another key: left alone
        _wait_running(a, other)
        second = _execute(b, "deploy", "acme")
        cancelled = wait_job(a, first, timeout=60)
        assert cancelled["status"] == "cancelled", cancelled
        _wait_running(b, second)  # the freed slot goes to the new job
        assert a.get(f"/api/jobs/{other}").json()["status"] == "running"
        # A cancel through either replica stops a step running on the other one.
        for client, job in ((a, second), (b, other)):
            assert client.post(f"/api/jobs/{job}/cancel").status_code == 200
            assert wait_job(client, job, 90.0)["status"] == "cancelled"
