"""A deployment's tarball is kept in the store, so a second `Deployments` over the same
repository (another replica) unpacks and registers it on demand, once; a failed build
keeps no tarball."""

from __future__ import annotations

import asyncio
from pathlib import Path

from v1_helpers import workspace

from engine.deployments import FAILED, READY, SOURCE, Deployments
from engine.store.cloud import MemoryCloudRepository
from engine.workspaces import WorkspaceRegistry


def _only_copy(folder: Path, loaded_from: Path | None) -> bool:
    """`folder` holds the unpacked workspace, alone in its tenant folder (no partial
    unpack left), and is where the workspace was loaded from."""
    assert (folder / ".workflows" / "main.yaml").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    return loaded_from is None or loaded_from.resolve() == folder.resolve()


async def test_another_replica_unpacks_the_stored_tarball_once(tmp_path: Path) -> None:
    repo = MemoryCloudRepository()
    built = Deployments(repo, WorkspaceRegistry({}), tmp_path / "a")
    dep = await built.create("acme", workspace())
    await built.wait_built(dep.id)
    ready = await built.get("acme", dep.id)
    assert ready.data["status"] == READY, ready.data
    assert await repo.get(SOURCE, dep.id) is not None

    registry = WorkspaceRegistry({})
    other = Deployments(repo, registry, tmp_path / "b")
    loaded = await asyncio.gather(*(other.load(ready) for _ in range(5)))
    assert {x.revision for x in loaded} == {ready.data["revision"]}
    assert "greet" in loaded[0].spec.tasks
    mine = other.local_path("acme", dep.id)
    assert _only_copy(mine, Path(loaded[0].path))
    assert registry.get(ready.data["workspace"]).current is not None

    # A third one started later registers it at start, from its own copy.
    third = Deployments(repo, WorkspaceRegistry({}), tmp_path / "c")
    assert await third.open() == 1
    assert _only_copy(third.local_path("acme", dep.id), None)
    await built.close()


async def test_a_failed_build_keeps_no_tarball(tmp_path: Path) -> None:
    repo = MemoryCloudRepository()
    deps = Deployments(repo, WorkspaceRegistry({}), tmp_path)
    dep = await deps.create("acme", workspace("tasks: {broken: {flow: 3}}\n"))
    await deps.wait_built(dep.id)
    assert (await deps.get("acme", dep.id)).data["status"] == FAILED
    assert await repo.get(SOURCE, dep.id) is None
    await deps.close()
