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


def test_partitur_run_completes_a_job_on_each_loop(tmp_path: Path) -> None:
    """The same job through `partitur run` on uvloop and on the standard loop."""
    root = tmp_path
    flows = root / "ws" / ".workflows"
    flows.mkdir(parents=True)
    (flows / "t.yaml").write_text(
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
        env = {"PARTITUR_LOOP": loop, "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, "-m", "server.cli", "run", "two", "--workspace", str(root / "ws"),
             "--db", f"sqlite:///{root / (loop + '.db')}"],
            capture_output=True, text=True, timeout=60, env=env,
        )
        assert done.returncode == 0, done.stderr
        assert "said one" in done.stdout and "said two" in done.stdout


def test_a_retry_delay_is_kept_on_uvloop(tmp_path: Path) -> None:
    """A step retried after a delay runs again on uvloop, whose timers count whole
    milliseconds and may fire a little before the wakeup they were set for."""
    flows = tmp_path / "ws" / ".workflows"
    flows.mkdir(parents=True)
    (flows / "t.yaml").write_text(
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
        done = subprocess.run(
            [sys.executable, "-m", "server.cli", "run", "flaky", "--workspace",
             str(tmp_path / "ws"), "--db", f"sqlite:///{tmp_path / 'runs.db'}",
             "-i", f"counter={counter}"],
            capture_output=True, text=True, timeout=60,
            env={"PARTITUR_LOOP": "uvloop", "PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 0, done.stderr
        assert counter.read_text().strip() == "3"
