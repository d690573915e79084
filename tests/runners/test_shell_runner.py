from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from engine.errors import NotFound
from engine.runners import RUNNERS, get_runner
from engine.runners.base import RunResult, StepRun
from engine.runners.process import kill_process_group
from engine.runners.shell import ShellRunner


class Sink:
    """Collects the lines a runner logs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.seen = asyncio.Event()

    def line(self, stream: str, text: str) -> None:
        self.lines.append((stream, text))
        self.seen.set()

    def texts(self, stream: str) -> list[str]:
        return [text for s, text in self.lines if s == stream]


def step_run(tmp_path: Path, script: str, *, timeout: float | None = None,
             env: dict[str, str] | None = None, **action: Any) -> StepRun:
    workdir = tmp_path / "rev"
    workdir.mkdir(exist_ok=True)
    return StepRun(
        job_id="job-1", step="build", attempt=1, action_type="shell",
        action={"type": "shell", "script": script, **action}, input={},
        workdir=workdir, artifacts_dir=tmp_path / "artifacts", env=env or {},
        timeout=timeout,
    )


async def run(
    run_: StepRun, runner: ShellRunner | None = None
) -> tuple[RunResult, Sink, list[int | None]]:
    sink = Sink()
    pids: list[int | None] = []
    result = await (runner or ShellRunner()).run(run_, sink, pids.append)
    return result, sink, pids


def live_members(pgid: int) -> list[psutil.Process]:
    """Processes of group `pgid` that are not zombies."""
    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


async def assert_group_gone(pgid: int) -> None:
    # Nothing of the group may still run (a SIGKILL takes a moment to land)...
    deadline = time.monotonic() + 2
    while live_members(pgid):
        assert time.monotonic() < deadline, f"{live_members(pgid)} still running"
        await asyncio.sleep(0.02)
    # ...and once init has reaped the orphaned zombies, the group does not exist.
    deadline = time.monotonic() + 20
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"process group {pgid} still exists"
        await asyncio.sleep(0.05)


async def test_lines_arrive_in_order_with_their_stream(tmp_path: Path) -> None:
    script = "echo one; echo two >&2; sleep 0.05; echo three; sleep 0.05; echo four >&2"
    result, sink, pids = await run(step_run(tmp_path, script))
    assert result.status == "completed" and result.exit_code == 0 and result.output is None
    assert sink.lines == [("stdout", "one"), ("stderr", "two"), ("stdout", "three"),
                          ("stderr", "four")]
    assert len(pids) == 1 and isinstance(pids[0], int)


async def test_last_output_line_wins(tmp_path: Path) -> None:
    script = 'echo \'OUTPUT: {"a": 1}\'; echo "OUTPUT: not json"; echo \'OUTPUT: {"b": [1, 2]}\''
    result, sink, _ = await run(step_run(tmp_path, script))
    assert result.status == "completed"
    assert result.output == {"b": [1, 2]}
    assert len(sink.texts("stdout")) == 3  # OUTPUT lines are logged too


async def test_bad_output_json_fails_the_step(tmp_path: Path) -> None:
    result, _, _ = await run(step_run(tmp_path, 'echo "OUTPUT: {oops"'))
    assert result.status == "failed"
    assert result.error is not None and "invalid JSON after OUTPUT:" in result.error


async def test_output_on_stderr_does_not_count(tmp_path: Path) -> None:
    result, _, _ = await run(step_run(tmp_path, 'echo \'OUTPUT: {"a": 1}\' >&2'))
    assert result.status == "completed" and result.output is None


async def test_state_lines(tmp_path: Path) -> None:
    script = 'echo \'STATE: {"n": 1}\'; echo \'STATE: {"n": 2}\'; echo \'OUTPUT: 5\''
    result, _, _ = await run(step_run(tmp_path, script))
    assert result.status == "completed"
    assert result.state == {"n": 2} and result.output == 5


async def test_exit_code_and_stderr_tail(tmp_path: Path) -> None:
    script = "for i in 1 2 3 4 5 6 7; do echo err$i >&2; done; echo fine; exit 3"
    result, _, _ = await run(step_run(tmp_path, script))
    assert result.status == "failed" and result.kind == "error"
    assert result.exit_code == 3
    assert result.error == "exit code 3\nerr3\nerr4\nerr5\nerr6\nerr7"


async def test_env_cwd_and_artifacts_dir(tmp_path: Path) -> None:
    script = ('echo "$PARTITUR_JOB_ID $GREETING"; pwd; echo "$ARTIFACTS_DIR"; '
              'echo "$HOME" | grep -q . && echo has-home; touch "$ARTIFACTS_DIR/report.txt"')
    run_ = step_run(tmp_path, script, env={"PARTITUR_JOB_ID": "job-1", "GREETING": "hi there"})
    result, sink, _ = await run(run_)
    assert result.status == "completed", result.error
    assert sink.texts("stdout") == [
        "job-1 hi there", str(run_.workdir.resolve()), str(run_.artifacts_dir), "has-home"]
    assert (run_.artifacts_dir / "report.txt").exists()


async def test_cmd_and_interpreters(tmp_path: Path) -> None:
    result, sink, _ = await run(step_run(tmp_path, "", cmd="echo from-cmd"))
    assert result.status == "completed" and sink.texts("stdout") == ["from-cmd"]

    result, sink, _ = await run(step_run(tmp_path, "echo $0", interpreter="sh"))
    assert sink.texts("stdout") == ["sh"]

    result, sink, _ = await run(step_run(
        tmp_path, 'import json; print("OUTPUT: " + json.dumps({"py": True}))',
        interpreter=sys.executable))
    assert result.status == "completed" and result.output == {"py": True}

    result, _, pids = await run(step_run(tmp_path, "x", interpreter="no-such-interpreter"))
    assert result.status == "failed"
    assert result.error == "interpreter not found: no-such-interpreter"
    assert pids == []

    result, _, _ = await run(step_run(tmp_path, "   "))
    assert result.status == "failed" and result.error == "shell action has no script or cmd"


async def test_missing_workdir_fails_cleanly(tmp_path: Path) -> None:
    run_ = step_run(tmp_path, "echo hi")
    run_.workdir.rmdir()
    result, _, pids = await run(run_)
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith("cannot start bash")
    assert pids == [None]


async def test_long_lines_are_split_not_fatal(tmp_path: Path) -> None:
    script = (f"{sys.executable} -c \"import sys; sys.stdout.write('x' * 2500 + '\\n'); "
              "sys.stdout.write('y' * 10 + '\\n')\"")
    result, sink, _ = await run(step_run(tmp_path, script), ShellRunner(max_line=1000))
    assert result.status == "completed"
    assert [len(t) for t in sink.texts("stdout")] == [1000, 1000, 500, 10]

    # With the default limit a 3 MiB line is logged in 1 MiB pieces.
    script = f"{sys.executable} -c \"print('z' * (3 * 1024 * 1024 + 5))\""
    result, sink, _ = await run(step_run(tmp_path, script))
    assert result.status == "completed"
    assert [len(t) for t in sink.texts("stdout")] == [1024 * 1024] * 3 + [5]


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    script = "sleep 100 & sleep 100 & (sleep 100; echo never) & echo started; wait"
    started = time.monotonic()
    result, sink, pids = await run(step_run(tmp_path, script, timeout=0.5))
    assert time.monotonic() - started < 5
    assert result.status == "failed" and result.kind == "timeout"
    assert result.error == "timed out after 0.5s" and result.exit_code is None
    assert sink.texts("stdout") == ["started"]
    assert pids[0] is not None
    await assert_group_gone(pids[0])


async def test_timeout_kills_a_group_that_ignores_sigterm(tmp_path: Path) -> None:
    script = "trap '' TERM; sleep 100 & echo started; wait; wait"
    started = time.monotonic()
    result, _, pids = await run(step_run(tmp_path, script, timeout=0.3), ShellRunner(grace=0.3))
    assert result.kind == "timeout"
    assert time.monotonic() - started < 5
    assert pids[0] is not None
    await assert_group_gone(pids[0])


async def test_cancellation_kills_the_group_and_reraises(tmp_path: Path) -> None:
    sink = Sink()
    pids: list[int | None] = []
    run_ = step_run(tmp_path, "sleep 100 & echo started; sleep 100")
    task = asyncio.create_task(ShellRunner().run(run_, sink, pids.append))
    await asyncio.wait_for(sink.seen.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pids[0] is not None
    await assert_group_gone(pids[0])


async def test_background_leftovers_do_not_outlive_the_step(tmp_path: Path) -> None:
    started = time.monotonic()
    result, sink, pids = await run(step_run(tmp_path, "sleep 100 & echo done"))
    assert result.status == "completed" and sink.texts("stdout") == ["done"]
    assert time.monotonic() - started < 5
    assert pids[0] is not None
    await assert_group_gone(pids[0])


async def test_killed_by_signal(tmp_path: Path) -> None:
    result, _, _ = await run(step_run(tmp_path, "echo bye >&2; kill -9 $$"))
    assert result.status == "failed"
    assert result.exit_code == 137
    assert result.error == "killed by SIGKILL\nbye"


def test_kill_process_group_is_safe() -> None:
    with pytest.raises(ValueError):
        kill_process_group(0)
    with pytest.raises(ValueError):
        kill_process_group(os.getpgrp())
    # A group that does not exist (pid_max is far below this on Linux).
    assert kill_process_group(2**22 + 12345) is False


def test_registry() -> None:
    assert isinstance(get_runner("shell"), ShellRunner)
    assert RUNNERS["script"] is RUNNERS["shell"]
    with pytest.raises(NotFound):
        get_runner("teleport")
