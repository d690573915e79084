"""Sources are polled: a folder workspace reloads when its files change, a git workspace
when its branch moves (every `poll_interval`), with no call to refresh."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from engine.runtime import Runtime, RuntimeOptions
from engine.sources.git import GitSpec

TASK = """
tasks:
  show:
    flow:
      say:
        type: shell
        interpreter: sh
        script: |
          echo 'OUTPUT: {"v": VALUE}'
"""


def write(folder: Path, value: int) -> None:
    (folder / ".workflows").mkdir(parents=True, exist_ok=True)
    (folder / ".workflows" / "main.yaml").write_text(TASK.replace("VALUE", str(value)), "utf-8")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                           *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def commit(repo: Path, value: int) -> str:
    write(repo, value)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"value {value}")
    return git(repo, "rev-parse", "HEAD")


async def wait_for(check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def run_show(rt: Runtime, name: str) -> object:
    state = await rt.orchestrator.wait(await rt.orchestrator.create_job(name, "show", {}), 20)
    assert state.status.value == "completed", state.error
    return state.output


async def test_a_folder_workspace_reloads_when_its_files_change(tmp_path: Path) -> None:
    folder = tmp_path / "ws"
    write(folder, 1)
    rt = Runtime(RuntimeOptions(db_url="memory://", logs_dir=tmp_path / "logs",
                                artifacts_dir=tmp_path / "artifacts",
                                workspaces={"main": folder}, folder_interval=0.1,
                                concurrency=1))
    await rt.open()
    rt.start_triggers()
    try:
        ws = rt.workspaces.get("main")
        first = ws.current.revision if ws.current else None
        assert first is not None and await run_show(rt, "main") == {"say": {"v": 1}}

        write(folder, 22)
        await wait_for(lambda: ws.current is not None and ws.current.revision != first,
                       "the folder change to be loaded")
        assert await run_show(rt, "main") == {"say": {"v": 22}}

        # A broken file is reported; the last good revision keeps serving.
        good = ws.current.revision if ws.current else None
        (folder / ".workflows" / "main.yaml").write_text("tasks: [oops\n", "utf-8")
        await wait_for(lambda: bool(ws.load_error), "the load error")
        assert ws.current is not None and ws.current.revision == good
        assert ".workflows/main.yaml:" in (ws.load_error_text() or "")
        assert await run_show(rt, "main") == {"say": {"v": 22}}
    finally:
        await rt.close()


async def test_a_git_workspace_follows_its_branch_every_poll_interval(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    first = commit(repo, 1)
    rt = Runtime(RuntimeOptions(
        db_url="memory://", logs_dir=tmp_path / "logs", artifacts_dir=tmp_path / "artifacts",
        git_workspaces={"ops": GitSpec(url=f"file://{repo}", ref="main", poll_interval=0.5)},
        cache_dir=tmp_path / "cache", concurrency=1))
    await rt.open()
    rt.start_triggers()
    try:
        ws = rt.workspaces.get("ops")
        assert ws.current is not None and ws.current.revision == first
        second = commit(repo, 2)
        await wait_for(lambda: ws.current is not None and ws.current.revision == second,
                       "the new commit to be fetched")
        assert await run_show(rt, "ops") == {"say": {"v": 2}}
    finally:
        await rt.close()
