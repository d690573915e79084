"""Git workspaces against a real local repository (file://): pinning, reloads, errors,
and removing unused checkouts at start."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from engine.core import commands as cmd
from engine.runtime import Runtime, RuntimeOptions
from engine.sources.git import GitSpec

TASKS = """
tasks:
  show:
    input:
      wait: { type: number, default: 0 }
    flow:
      read:
        type: shell
        interpreter: sh
        input: { wait: "<< input.wait >>" }
        script: |
          sleep << input.wait >>
          echo "OUTPUT: {\\"data\\": \\"$(cat data.txt)\\"}"
"""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                           *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def runtime(tmp: Path, repo: Path) -> Runtime:
    return Runtime(RuntimeOptions(
        db_url="memory://", logs_dir=tmp / "logs", artifacts_dir=tmp / "artifacts",
        git_workspaces={"ops": GitSpec(url=f"file://{repo}", ref="main")},
        cache_dir=tmp / "cache", concurrency=2,
    ))


async def test_jobs_stay_on_their_revision_and_a_bad_revision_keeps_the_last_good(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    first = commit(repo, {".workflows/main.yaml": TASKS, "data.txt": "one"}, "one")
    rt = runtime(tmp_path, repo)
    await rt.open()
    try:
        ws = rt.workspaces.get("ops")
        assert ws.source == "git" and ws.current is not None
        assert ws.current.revision == first and ws.load_error == []
        orch = rt.orchestrator

        # A slow job starts on the first revision; the repository moves on meanwhile.
        slow = await orch.create_job("ops", "show", {"wait": 1.5})
        second = commit(repo, {"data.txt": "two"}, "two")
        ws = await rt.workspaces.refresh("ops")
        assert ws.current is not None and ws.current.revision == second
        fast = await orch.create_job("ops", "show", {})
        slow_state, fast_state = await orch.wait(slow, 15), await orch.wait(fast, 15)
        assert slow_state.revision == first and fast_state.revision == second
        assert slow_state.output == {"read": {"data": "one"}}
        assert fast_state.output == {"read": {"data": "two"}}
        # Nothing uses the first revision any more: its checkout is gone.
        assert not (tmp_path / "cache" / "ops" / "rev" / first).exists()
        assert (tmp_path / "cache" / "ops" / "rev" / second).is_dir()

        # A revision that does not load leaves the last good one serving.
        commit(repo, {".workflows/main.yaml": "tasks:\n  show:\n    flow: [oops\n"}, "bad")
        ws = await rt.workspaces.refresh("ops")
        assert ws.current is not None and ws.current.revision == second
        text = ws.load_error_text() or ""
        assert ".workflows/main.yaml:4" in text and "invalid YAML" in text
        again = await orch.wait(await orch.create_job("ops", "show", {}), 15)
        assert again.revision == second and again.status.value == "completed"

        # Fixing it serves the fix and clears the error.
        fixed = commit(repo, {".workflows/main.yaml": TASKS, "data.txt": "three"}, "fix")
        ws = await rt.workspaces.refresh("ops")
        assert ws.current is not None and ws.current.revision == fixed and not ws.load_error
    finally:
        await rt.close()


async def test_an_unreachable_repository_is_a_load_error(tmp_path: Path) -> None:
    rt = runtime(tmp_path, tmp_path / "missing")
    await rt.open()
    try:
        ws = rt.workspaces.get("ops")
        assert ws.current is None
        assert "git fetch" in (ws.load_error_text() or "")
    finally:
        await rt.close()


def durable_runtime(tmp: Path, repo: Path) -> Runtime:
    # No local workers: a job stays queued, unfinished, across the restart.
    return Runtime(RuntimeOptions(
        db_url=f"sqlite:///{tmp / 'partitur.db'}", logs_dir=tmp / "logs",
        artifacts_dir=tmp / "artifacts",
        git_workspaces={"ops": GitSpec(url=f"file://{repo}", ref="main")},
        cache_dir=tmp / "cache", concurrency=0,
    ))


def checkouts(tmp: Path) -> set[str]:
    return {p.name for p in (tmp / "cache" / "ops" / "rev").iterdir()}


async def test_a_restart_removes_unused_checkouts_and_keeps_an_unfinished_jobs(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    first = commit(repo, {".workflows/main.yaml": TASKS, "data.txt": "one"}, "one")
    rt = durable_runtime(tmp_path, repo)
    await rt.open()
    job = await rt.orchestrator.create_job("ops", "show", {})
    second = commit(repo, {"data.txt": "two"}, "two")
    await rt.workspaces.refresh("ops")
    assert checkouts(tmp_path) == {first, second}
    # What a crash can leave too: a checkout nobody released, a half-extracted one.
    (tmp_path / "cache" / "ops" / "rev" / ("f" * 40)).mkdir()
    (tmp_path / "cache" / "ops" / "rev" / ".abc-crashed").mkdir()
    # Closing releases no revision either (a kill -9 leaves the same folders).
    await rt.close()

    third = commit(repo, {"data.txt": "three"}, "three")
    rt = durable_runtime(tmp_path, repo)
    await rt.open()
    try:
        ws = rt.workspaces.get("ops")
        assert ws.current is not None and ws.current.revision == third
        # `second` was current before but no job uses it; the job keeps `first`.
        assert checkouts(tmp_path) == {first, third}
        state = await rt.orchestrator.get_state(job)
        assert not state.terminal and state.revision == first
        assert rt.workspaces.revision("ops", first).path == tmp_path / "cache" / "ops" / \
            "rev" / first

        await rt.orchestrator.command(job, cmd.Cancel(reason="done"))
        assert (await rt.orchestrator.get_state(job)).terminal
        assert checkouts(tmp_path) == {third}
    finally:
        await rt.close()
