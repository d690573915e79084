"""A deployment built on one `partitur serve` replica runs on every replica of the database.

Replica A builds the deployment; replica B, already running, is asked for a job of it at
once: B fetches the stored tarball, unpacks it into its own data folder and registers
the workspace, then runs the job. A replica started later does the same at start. With
remote workers, a worker attached to B fetches the revision of a deployment built on A
from B, and B applies the step's result to the job made on A.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from harness import ServerProcess
from v1_helpers import call, deploy, wait_job

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from worker_procs import WorkerProcess, remote_settings

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def _files_of(server: ServerProcess, dep_id: str) -> list[Path]:
    """The deployment's unpacked workflow file(s) in `server`'s own data folder."""
    return list(server.tmp_dir.glob(f"deployments/*/{dep_id}/.workflows/main.yaml"))


@pytest.mark.timeout(240)
def test_a_deployment_made_on_one_replica_runs_on_the_others_without_a_restart(
        make_server: Callable[..., ServerProcess], pg_url: str) -> None:
    settings = {"db": {"url": pg_url}, "secrets_key": "test-secrets-key"}
    one = make_server(settings=settings)
    two = make_server(settings=settings)
    with httpx.Client(base_url=one.url, timeout=30) as a, \
            httpx.Client(base_url=two.url, timeout=30) as b:
        dep = deploy(a, timeout=60)
        dep_id = dep["id"]
        assert _files_of(one, dep_id), dep
        assert not _files_of(two, dep_id)

        made = call(b, "jobs/create", {"workflow": "greet", "params": {"name": "bee"}})
        job = wait_job(b, made["job_id"], timeout=90)
        assert job["status"] == "completed", job
        assert job["deployment_id"] == dep_id, job
        unpacked = _files_of(two, dep_id)
        assert unpacked and "greet:" in unpacked[0].read_text("utf-8")

        got = call(b, "workflows/get", {"workflow": "greet"})
        assert got["deployment_id"] == dep_id
        # A job created on A reads fine on B and the other way round.
        other = call(a, "jobs/create", {"workflow": "greet", "params": {"name": "ay"}})
        assert wait_job(b, other["job_id"], timeout=90)["status"] == "completed"

        # A replica started afterwards unpacks its own copy at start, never A's folder.
        three = make_server(settings=settings)
        assert _files_of(three, dep_id)
        with httpx.Client(base_url=three.url, timeout=30) as c:
            late = call(c, "jobs/create", {"workflow": "greet", "params": {"name": "cee"}})
            assert wait_job(c, late["job_id"], timeout=90)["status"] == "completed"



@pytest.mark.timeout(240)
def test_a_worker_on_another_replica_runs_a_deployment_it_never_saw(
        make_server: Callable[..., ServerProcess], pg_url: str, tmp_path: Path) -> None:
    settings = remote_settings(db={"url": pg_url}, secrets_key="test-secrets-key")
    one = make_server(settings=settings)
    two = make_server(settings=settings)
    worker = WorkerProcess(tmp_path / "worker", two.url)
    try:
        with httpx.Client(base_url=one.url, timeout=30) as a:
            dep_id = deploy(a, timeout=60)["id"]
            assert not _files_of(two, dep_id)
            made = call(a, "jobs/create", {"workflow": "greet", "params": {"name": "far"}})
            job = wait_job(a, made["job_id"], timeout=120)
            assert job["status"] == "completed", (job, worker.log_text()[-2000:])
        assert _files_of(two, dep_id)
    finally:
        worker.close()
