"""Running a step's process: its own process group, line-by-line output, timeouts, kills.

Shared by the runners that start a program (shell, python). The process gets stdin from
/dev/null (or the given bytes, then end of file) and a new session (so its process group
id is its pid); stdout and stderr are read as data arrives and every line goes to the log
sink at once. Lines longer than `max_line` bytes are split. When the process exits,
whatever it left running in its group is killed: a step's processes do not outlive the
step. On timeout or cancellation the whole group gets SIGTERM, then SIGKILL after `grace`
seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.runners.base import LogSink

MAX_LINE = 1024 * 1024
STDERR_TAIL = 5
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


async def terminate_process_group(pgid: int, grace: float = 2.0) -> None:
    """SIGTERM group `pgid`, wait up to `grace` for it to go away, then SIGKILL it.

    For a group that is not our child's (a restarted server killing a lost step's group).
    """
    if kill_process_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and group_alive(pgid):  # noqa: ASYNC110 - polling a foreign group
            await asyncio.sleep(0.05)
        kill_process_group(pgid, signal.SIGKILL)


def _decode(raw: bytes) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return raw.decode("utf-8", errors="replace")


class _LineSplitter:
    """Turns chunks of a pipe into lines, splitting any line beyond `max_line` bytes."""

    __slots__ = ("_buffer", "_emit", "_max_line")

    def __init__(self, emit: Callable[[str], None], max_line: int) -> None:
        self._emit = emit
        self._max_line = max_line
        self._buffer = b""

    def feed(self, chunk: bytes) -> None:
        buffer = self._buffer + chunk if self._buffer else chunk
        start = 0
        max_line = self._max_line
        while (end := buffer.find(b"\n", start)) >= 0:
            while end - start > max_line:
                self._emit(_decode(buffer[start : start + max_line]))
                start += max_line
            self._emit(_decode(buffer[start:end]))
            start = end + 1
        while len(buffer) - start > max_line:
            self._emit(_decode(buffer[start : start + max_line]))
            start += max_line
        self._buffer = buffer[start:]

    def finish(self) -> None:
        if self._buffer:
            self._emit(_decode(self._buffer))
            self._buffer = b""


class _StepProtocol(asyncio.SubprocessProtocol):
    """Hands each line to its splitter as data arrives; tracks exit and pipe closes.

    `process_exited` fires when the program exits even if children it left behind still
    hold the pipes open (which `Process.wait()` would wait for).
    """

    def __init__(self, splitters: dict[int, _LineSplitter]) -> None:
        loop = asyncio.get_running_loop()
        self.splitters = splitters
        self.exited: asyncio.Future[None] = loop.create_future()
        self.pipes_closed: dict[int, asyncio.Future[None]] = {
            fd: loop.create_future() for fd in splitters
        }

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.splitters[fd].feed(data.encode() if isinstance(data, str) else data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd in self.splitters:
            self.splitters[fd].finish()
            if not self.pipes_closed[fd].done():
                self.pipes_closed[fd].set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: LogSink,
    on_start: Callable[[int | None], None],
    timeout: float | None = None,
    on_stdout: Callable[[str], None] | None = None,
    grace: float = 2.0,
    max_line: int = MAX_LINE,
    stdin: bytes | None = None,
) -> ProcessResult:
    """Run `argv` to its end (or `timeout`), logging every line; see the module docstring.

    Raises `OSError` when the program cannot be started. `on_stdout` sees every stdout
    line after it was logged (the shell runner looks for `OUTPUT:` lines there). `stdin`,
    when given, is written to the program's standard input, which is then closed.
    """
    stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)

    def out(text: str) -> None:
        log.line("stdout", text)
        if on_stdout is not None:
            on_stdout(text)

    def err(text: str) -> None:
        log.line("stderr", text)
        stderr_tail.append(text)

    splitters = {1: _LineSplitter(out, max_line), 2: _LineSplitter(err, max_line)}
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.subprocess_exec(
        lambda: _StepProtocol(splitters),
        *argv,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
    pgid = transport.get_pid()
    if stdin is not None:
        # Buffered by the transport; a program that exits unread just drops it.
        pipe = transport.get_pipe_transport(0)
        assert isinstance(pipe, asyncio.WriteTransport)
        pipe.write(stdin)
        pipe.close()
    timed_out = False
    try:
        on_start(pgid)
        try:
            async with asyncio.timeout(timeout):
                await protocol.exited
                # Children left in the background may still hold the pipes open.
                await asyncio.wait(protocol.pipes_closed.values(), timeout=_DRAIN_AFTER_EXIT)
        except TimeoutError:
            timed_out = True
    finally:
        # Runs on exit, timeout and cancellation alike; shielded so that a second
        # cancellation cannot leave the group half-killed.
        await asyncio.shield(_cleanup(pgid, transport, protocol, grace))
    return ProcessResult(
        returncode=None if timed_out else transport.get_returncode(),
        timed_out=timed_out,
        stderr_tail=list(stderr_tail),
    )


async def _cleanup(
    pgid: int, transport: asyncio.SubprocessTransport, protocol: _StepProtocol, grace: float
) -> None:
    try:
        if not protocol.exited.done():
            kill_process_group(pgid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.exited), grace)
        kill_process_group(pgid, signal.SIGKILL)
        if not protocol.exited.done():
            await protocol.exited
        # With the group dead the pipes close; take what is left in them.
        await asyncio.wait(protocol.pipes_closed.values(), timeout=_DRAIN_AFTER_EXIT)
    finally:
        transport.close()
