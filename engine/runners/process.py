"""Running a step's process: its own process group, line-by-line output, timeouts, kills.

Shared by the runners that start a program (shell, python). The process gets stdin from
/dev/null and a new session (so its process group id is its pid); stdout and stderr are
read concurrently and every line goes to the log sink at once. Lines longer than
`max_line` bytes are split. When the process exits, whatever it left running in its group
is killed: a step's processes do not outlive the step. On timeout or cancellation the
whole group gets SIGTERM, then SIGKILL after `grace` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.runners.base import LogSink

MAX_LINE = 1024 * 1024
STDERR_TAIL = 5
_READ_CHUNK = 64 * 1024
_DRAIN_AFTER_EXIT = 0.5


@dataclass(slots=True)
class ProcessResult:
    """How the process ended. `returncode` is negative (-signal) when killed by a signal."""

    returncode: int | None
    timed_out: bool = False
    stderr_tail: list[str] = field(default_factory=list)


def kill_process_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Send `sig` to process group `pgid`; False if no such group (or not ours to kill).

    Refuses pgid ≤ 1 and the caller's own group, which `killpg` would otherwise happily
    signal.
    """
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"refusing to signal process group {pgid}")
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process (zombies included) is still in group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def terminate_process_group(
    pgid: int, grace: float = 2.0, proc: asyncio.subprocess.Process | None = None
) -> None:
    """SIGTERM the group, wait up to `grace` for its leader to exit, then SIGKILL it."""
    if kill_process_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace
        if proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)
        while time.monotonic() < deadline and group_alive(pgid):
            await asyncio.sleep(0.02)
            if proc is not None and proc.returncode is not None:
                break
    kill_process_group(pgid, signal.SIGKILL)
    if proc is not None:
        await proc.wait()


def _decode(raw: bytes) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


async def _pump(
    reader: asyncio.StreamReader, emit: Callable[[str], None], max_line: int
) -> None:
    buffer = b""
    while chunk := await reader.read(_READ_CHUNK):
        buffer += chunk
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            line_end = end
            while line_end - start > max_line:
                emit(_decode(buffer[start : start + max_line]))
                start += max_line
            emit(_decode(buffer[start:line_end]))
            start = end + 1
        while len(buffer) - start > max_line:
            emit(_decode(buffer[start : start + max_line]))
            start += max_line
        buffer = buffer[start:]
    if buffer:
        emit(_decode(buffer))


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: LogSink,
    on_start: Callable[[int | None], None],
    timeout: float | None = None,  # noqa: ASYNC109 - on timeout the group is killed
    on_stdout: Callable[[str], None] | None = None,
    grace: float = 2.0,
    max_line: int = MAX_LINE,
) -> ProcessResult:
    """Run `argv` to its end (or `timeout`), logging every line; see the module docstring.

    Raises `OSError` when the program cannot be started. `on_stdout` sees every stdout
    line after it was logged (the shell runner looks for `OUTPUT:` lines there).
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
    pgid = proc.pid
    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)

    def out(text: str) -> None:
        log.line("stdout", text)
        if on_stdout is not None:
            on_stdout(text)

    def err(text: str) -> None:
        log.line("stderr", text)
        stderr_tail.append(text)

    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.create_task(_pump(proc.stdout, out, max_line)),
        asyncio.create_task(_pump(proc.stderr, err, max_line)),
    ]
    timed_out = False
    try:
        on_start(proc.pid)
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
                # Children left in the background may still hold the pipes open.
                await asyncio.wait(readers, timeout=_DRAIN_AFTER_EXIT)
        except TimeoutError:
            timed_out = True
    finally:
        # Runs on normal exit, timeout and cancellation alike; shielded so that a
        # cancellation cannot leave the group half-killed.
        await asyncio.shield(_cleanup(pgid, proc, readers, grace))
    return ProcessResult(
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        stderr_tail=list(stderr_tail),
    )


async def _cleanup(
    pgid: int,
    proc: asyncio.subprocess.Process,
    readers: list[asyncio.Task[None]],
    grace: float,
) -> None:
    if proc.returncode is None:
        await terminate_process_group(pgid, grace, proc)
    else:
        kill_process_group(pgid, signal.SIGKILL)
    # With the group dead the pipes close; read what is left, then give up.
    _, pending = await asyncio.wait(readers, timeout=_DRAIN_AFTER_EXIT)
    for task in pending:
        task.cancel()
    for task in readers:
        with contextlib.suppress(asyncio.CancelledError):
            await task
