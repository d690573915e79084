"""Folder workspaces pin files: a job runs its revision's snapshot of the folder, an
edited script makes a new revision for new jobs, and a snapshot no job uses is removed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from engine.runtime import Runtime, RuntimeOptions
from engine.sources.snapshot import FolderSnapshots
from engine.workspaces import WorkspaceRegistry

TASK = """
tasks:
  run:
    flow:
      go:
        type: shell
        interpreter: sh
        script: |
          touch "{started}"
          while [ ! -f "{gate}" ]; do sleep 0.05; done
          sh script.sh
"""


def script(folder: Path, value: str) -> None:
    (folder / "script.sh").write_text(f"echo 'OUTPUT: {{\"v\": \"{value}\"}}'\n", "utf-8")


async def wait_for(check, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_running_job_keeps_its_revisions_script_and_a_new_job_gets_the_edit(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ws"
    (folder / ".workflows").mkdir(parents=True)
    started, gate = tmp_path / "started", tmp_path / "gate"
    (folder / ".workflows" / "main.yaml").write_text(
        TASK.format(started=started, gate=gate), "utf-8")
    script(folder, "old")
    rt = Runtime(RuntimeOptions(db_url="memory://", logs_dir=tmp_path / "data" / "logs",
                                artifacts_dir=tmp_path / "data" / "artifacts",
                                workspaces={"main": folder}, folder_interval=0.1,
                                concurrency=2))
    await rt.open()
    rt.start_triggers()
    try:
        ws = rt.workspaces.get("main")
        assert ws.current is not None and ws.snapshots is not None
        old = ws.current.revision
        assert ws.current.path == ws.snapshots.path_of(old)
        assert (ws.current.path / "script.sh").read_text("utf-8") == (
            folder / "script.sh").read_text("utf-8")

        first = await rt.orchestrator.create_job("main", "run", {})
        await wait_for(started.exists, "the first job's step to start")

        # Only the script changes: the poller sees it and makes a new revision.
        script(folder, "new")
        await wait_for(lambda: ws.current is not None and ws.current.revision != old,
                       "the edited script to make a new revision")
        new = ws.current.revision
        assert sorted(ws.snapshots.snapshots()) == sorted([old, new])

        gate.touch()
        done = await rt.orchestrator.wait(first, 60)
        assert done.status.value == "completed", done.error
        assert done.revision == old
        assert done.output == {"go": {"v": "old"}}

        second = await rt.orchestrator.wait(
            await rt.orchestrator.create_job("main", "run", {}), 60)
        assert second.status.value == "completed", second.error
        assert second.revision == new
        assert second.output == {"go": {"v": "new"}}

        # No job uses the old revision any more: its snapshot is gone, the current stays.
        await wait_for(lambda: ws.snapshots is not None and ws.snapshots.snapshots() == [new],
                       "the unused snapshot to be removed")
        assert not ws.snapshots.path_of(old).exists()
        assert (ws.snapshots.path_of(new) / "script.sh").is_file()
    finally:
        await rt.close()


def test_skipped_folders_are_neither_copied_nor_part_of_the_revision(tmp_path: Path) -> None:
    folder = tmp_path / "ws"
    (folder / ".workflows").mkdir(parents=True)
    (folder / ".workflows" / "main.yaml").write_text("tasks: {}\n", "utf-8")
    (folder / "lib").mkdir()
    (folder / "lib" / "tool.sh").write_text("echo 1\n", "utf-8")
    for skipped in (".git", "node_modules", ".venv", "lib/__pycache__"):
        (folder / skipped).mkdir(parents=True)
        (folder / skipped / "big").write_text("x", "utf-8")
    snaps = FolderSnapshots(folder, folder / "cache")  # a cache inside the folder is skipped
    revision, path = snaps.take()
    assert (path / "lib" / "tool.sh").read_text("utf-8") == "echo 1\n"
    assert not any((path / s).exists() for s in (".git", "node_modules", ".venv", "cache",
                                                  "lib/__pycache__"))
    (folder / "node_modules" / "big").write_text("changed", "utf-8")
    assert snaps.take()[0] == revision
    (folder / "lib" / "tool.sh").chmod(0o755)
    changed, _ = snaps.take()
    assert changed != revision
    (folder / "lib" / "tool.sh").write_text("echo 2\n", "utf-8")
    assert snaps.take()[0] not in (revision, changed)
    assert sorted(snaps.snapshots()) == sorted({revision, changed, snaps.take()[0]})


def test_a_kept_snapshot_serves_its_revision_after_a_restart_and_goes_when_released(
    tmp_path: Path,
) -> None:
    folder, cache = tmp_path / "ws", tmp_path / "cache"
    (folder / ".workflows").mkdir(parents=True)
    (folder / ".workflows" / "main.yaml").write_text(TASK.format(started="s", gate="g"),
                                                     "utf-8")
    script(folder, "old")
    registry = WorkspaceRegistry({"main": folder}, {}, cache_dir=cache, snapshot_folders=True)
    registry.load_all()
    ws = registry.get("main")
    assert ws.current is not None and ws.snapshots is not None
    old = ws.current.revision
    registry.acquire("main", old)  # a job runs it
    script(folder, "new")
    registry.reload("main")
    new = ws.current.revision
    assert new != old and sorted(ws.snapshots.snapshots()) == sorted([old, new])

    # A broken load leaves no snapshot behind and keeps the last good revision.
    (folder / ".workflows" / "main.yaml").write_text("tasks: [oops\n", "utf-8")
    registry.reload("main")
    assert ws.load_error and ws.current.revision == new
    assert sorted(ws.snapshots.snapshots()) == sorted([old, new])

    # Another process on the same cache finds the old revision's files for its job.
    again = WorkspaceRegistry({"main": folder}, {}, cache_dir=cache, snapshot_folders=True)
    pinned = again.revision("main", old)
    assert pinned.revision == old
    assert (pinned.path / "script.sh").read_text("utf-8").count("old") == 1

    registry.release("main", old)
    assert ws.snapshots.snapshots() == [new]


def test_validate_prints_the_revision_a_server_serves(tmp_path: Path) -> None:
    folder = tmp_path / "ws"
    (folder / ".workflows").mkdir(parents=True)
    (folder / ".workflows" / "main.yaml").write_text(
        "tasks:\n  t:\n    flow:\n      s: {type: shell, script: sh script.sh}\n", "utf-8")
    script(folder, "one")

    def validated() -> str:
        out = subprocess.run([sys.executable, "-m", "server.cli", "validate", str(folder)],
                             capture_output=True, text=True, check=True).stdout
        return out.rsplit("revision ", 1)[1].rstrip(")\n")

    def served() -> str:
        revision, _ = FolderSnapshots(folder, tmp_path / "cache").take()
        return revision

    first = validated()
    assert first == served()
    script(folder, "two")  # not YAML, yet a new revision
    assert validated() == served() != first
