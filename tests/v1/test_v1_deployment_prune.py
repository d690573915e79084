"""A deployment's unpacked folder goes once no workflow resolves to it and no unfinished
job uses it: superseded, its workflow deleted, after a kill -9 and a restart; the stored
tarball brings it back when it is asked for again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess
from v1_helpers import call, deploy, tarball

from engine.deployments import READY, Deployments
from engine.store.cloud import MemoryCloudRepository
from engine.workspaces import WorkspaceRegistry

pytestmark = pytest.mark.e2e

GATED = """
tasks:
  gated:
    flow:
      wait:
        type: shell
        interpreter: sh
        retry: {{ max_attempts: 3, on_lost: true }}
        script: |
          echo "$PARTITUR_ATTEMPT" >> "{started}"
          while [ ! -f "{gate}" ]; do sleep 0.05; done
          echo 'OUTPUT: {{"v": "{version}"}}'
"""


def _until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _folder(server: ServerProcess, dep_id: str) -> Path | None:
    found = list((server.tmp_dir / "deployments").glob(f"*/{dep_id}"))
    return found[0] if found else None


def _api_status(client: httpx.Client, job_id: str) -> str:
    return str(client.get(f"/api/jobs/{job_id}").json()["status"])


def test_superseded_and_deleted_deployments_go_when_their_last_job_ends(
    make_server: Callable[..., ServerProcess], tmp_path: Path,
) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    server = make_server(settings={"secrets_key": "test-secrets-key"})

    def source(version: str) -> str:
        return tarball({".workflows/main.yaml": GATED.format(
            started=started, gate=gate, version=version)})

    with httpx.Client(base_url=server.url, timeout=30) as v1:
        first = deploy(v1, source("one"))
        job_id = call(v1, "jobs/create", {"workflow": "gated", "params": {}})["job_id"]
        _until(lambda: started.exists(), "the job's step to start")
        second = deploy(v1, source("two"))
        # `first` no longer runs `gated`, but its job does: its folder stays.
        assert _folder(server, first["id"]) is not None
        assert _folder(server, second["id"]) is not None
    server.kill()

    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as v1:
        _until(lambda: started.read_text("utf-8").split() == ["1", "2"],
               "the lost step to run again")
        assert _folder(server, first["id"]) is not None
        # Deleting the workflow takes `second` out of service; no job uses it.
        call(v1, "workflows/delete", {"workflow": "gated"})
        _until(lambda: _folder(server, second["id"]) is None, "the unused folder to go")
        assert _folder(server, first["id"]) is not None
        assert _api_status(v1, job_id) == "running"

        gate.touch()
        _until(lambda: _api_status(v1, job_id) == "completed", "the job to end")
        _until(lambda: _folder(server, first["id"]) is None, "the ended job's folder to go")

        # The tarball is still stored: pinning the old deployment unpacks it again.
        call(v1, "deployments/pin", {"workflow": "gated", "deployment_id": first["id"]})
        again = call(v1, "jobs/create", {"workflow": "gated", "params": {}})["job_id"]
        _until(lambda: _api_status(v1, again) == "completed", "the pinned job to end")
        job = v1.get(f"/api/jobs/{again}").json()
        assert job["output"] == {"wait": {"v": "one"}}, job
        assert call(v1, "jobs/get", {"id": again})["deployment_id"] == first["id"]


async def test_a_replica_removes_what_it_unpacked_for_a_deployment_out_of_service(
    tmp_path: Path,
) -> None:
    repo = MemoryCloudRepository()
    built = Deployments(repo, WorkspaceRegistry({}), tmp_path / "a")
    older = await built.create("acme", tarball({".workflows/main.yaml": GATED.format(
        started="s", gate="g", version="1")}))
    await built.wait_built(older.id)
    newer = await built.create("acme", tarball({".workflows/main.yaml": GATED.format(
        started="s", gate="g", version="2")}))
    await built.wait_built(newer.id)
    assert (await built.get("acme", newer.id)).data["status"] == READY
    # The builder removed the superseded one's folder when the newer one was ready.
    assert not built.local_path("acme", older.id).exists()
    assert built.local_path("acme", newer.id).is_dir()

    # Another replica unpacked the older one (an old job's page), then restarts.
    registry = WorkspaceRegistry({})
    other = Deployments(repo, registry, tmp_path / "b")
    await other.load(await built.get("acme", older.id))
    assert other.local_path("acme", older.id).is_dir()
    assert await other.open() == 2
    await other.after_recovery()
    assert not other.local_path("acme", older.id).exists()
    assert other.local_path("acme", newer.id).is_dir()
    assert [ws.name for ws in registry.all()] == [newer.data["workspace"]]
    await built.close()
    await other.close()
