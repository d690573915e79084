"""`engine.eventloop`: the long-running commands run on uvloop where it is installed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from engine import eventloop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_run_uses_uvloop_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop  # noqa: F401  # a dependency on Linux and macOS
    monkeypatch.delenv("PARTITUR_LOOP", raising=False)
    assert eventloop.loop_name() == "uvloop"
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_partitur_loop_asyncio_asks_for_the_standard_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARTITUR_LOOP", "asyncio")
    assert eventloop.loop_name() == "asyncio"
    assert eventloop.run(_loop_module()).startswith("asyncio")


def _workspace(root: Path, yaml: str) -> Path:
    flows = root / "ws" / ".workflows"
    flows.mkdir(parents=True)
    (flows / "t.yaml").write_text(yaml)
    return root / "ws"


def _partitur_run(workspace: Path, task: str, db: Path, loop: str,
                  *inputs: str) -> subprocess.CompletedProcess[str]:
    args = [a for value in inputs for a in ("-i", value)]
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "run", task, "--workspace", str(workspace),
         "--db", f"sqlite:///{db}", *args],
        capture_output=True, text=True, timeout=60,
        env={"PARTITUR_LOOP": loop, "PATH": "/usr/bin:/bin"},
    )


def test_partitur_run_completes_a_job_on_each_loop(tmp_path: Path) -> None:
    """The same job through `partitur run` on uvloop and on the standard loop."""
    workspace = _workspace(tmp_path,
        "tasks:\n"
        "  two:\n"
        "    flow:\n"
        "      a: { action: say, input: { text: one } }\n"
        "      b: { action: say, depends_on: [a], input: { text: two } }\n"
        "actions:\n"
        "  say:\n"
        "    type: script\n"
        "    interpreter: sh\n"
        "    input: { text: { type: string } }\n"
        "    script: echo said << input.text >>\n"
    )
    for loop in ("uvloop", "asyncio"):
        done = _partitur_run(workspace, "two", tmp_path / f"{loop}.db", loop)
        assert done.returncode == 0, done.stderr
        assert "said one" in done.stdout and "said two" in done.stdout


def test_a_retry_delay_is_kept_on_uvloop(tmp_path: Path) -> None:
    """A step retried after a delay runs again on uvloop, whose timers count whole
    milliseconds and may fire a little before the wakeup they were set for."""
    workspace = _workspace(tmp_path,
        "tasks:\n"
        "  flaky:\n"
        "    input: { counter: { type: string, required: true } }\n"
        "    flow:\n"
        "      try:\n"
        "        type: script\n"
        "        interpreter: sh\n"
        "        input: { counter: \"<< input.counter >>\" }\n"
        "        retry: { max_attempts: 3, delay: 0.05s }\n"
        "        script: |\n"
        "          n=$(cat << input.counter >> 2>/dev/null || echo 0)\n"
        "          echo $((n + 1)) > << input.counter >>\n"
        "          [ \"$n\" -ge 2 ]\n"
    )
    for run in range(5):
        counter = tmp_path / f"count-{run}"
        done = _partitur_run(workspace, "flaky", tmp_path / "runs.db", "uvloop",
                             f"counter={counter}")
        assert done.returncode == 0, done.stderr
        assert counter.read_text().strip() == "3"
