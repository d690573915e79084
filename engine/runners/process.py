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
import functools
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from engine.artifacts import make_step_dir
from engine.runners.base import LogSink
from engine.runners.spawn import prepare_spawn

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


T = TypeVar("T")


class _SpawnThreads:
    """Threads that start programs: a queue and a result handed back to the loop, about
    half the work of `run_in_executor` per start (each piece of it holds the GIL)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`fn(*args)` on a spawning thread; a future of the running loop for its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((loop, future, fn, args))
        return future

    def detach(self, fn: Callable[[], Any]) -> None:
        """`fn()` on a spawning thread; its result and errors are dropped."""
        self._put((None, None, fn, ()))

    def _put(self, item: tuple[Any, ...]) -> None:
        with self._lock:
            if self._idle == 0 and self._threads < self._limit:
                self._threads += 1
                threading.Thread(target=self._work, name=f"partitur-spawn-{self._threads}",
                                 daemon=True).start()
            self._idle -= 1
        self._queue.put(item)

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            loop, future, fn, args = self._queue.get()
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the waiting coroutine
                if loop is not None:
                    _hand_back(loop, _set_exception, future, exc)
            else:
                if loop is not None:
                    _hand_back(loop, _set_result, future, result)


def _hand_back(loop: asyncio.AbstractEventLoop, setter: Callable[..., None],
               future: asyncio.Future[Any], value: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(setter, future, value)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


# Spawning (fork + exec) costs 0.5–3 ms of the calling thread; done on the event loop it
# stalls every other step's bookkeeping, so it runs here instead. The thread mostly waits
# (vfork: until the child has exec'd, which on a busy machine waits for a CPU), so there
# are as many as the usual executor concurrency: with 2, starts queued behind each other
# (W2 at load ~15: 0.42-0.77 s per run against 0.29-0.50 s with 8).
_SPAWNER = _SpawnThreads(8)
_READ_SIZE = 256 * 1024


class _Spawned:
    """A process started with `posix_spawn`: the part of `Popen` the runners use."""

    __slots__ = ("pid", "returncode")

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                # Reaped elsewhere (or SIGCHLD ignored): dead, its status unknown. `Popen`
                # says 0 then; so does this.
                self.returncode = 0
            else:
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int | None:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.returncode = 0
            else:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


@dataclass(slots=True)
class _Started:
    """A spawned process and the parent's ends of its pipes (raw, non-blocking fds)."""

    proc: subprocess.Popen[bytes] | _Spawned
    stdout: int
    stderr: int
    stdin: int | None


# A step's pipes usually reach end of file as its program exits, and one `waitpid` then
# finds the exit: no pidfd is opened and watched. The exit is watched only when the pipes
# stay open this long, close while the program still runs, or the step is being stopped.
_WATCH_EXIT_AFTER = 0.05


class _Child:
    """A started process: its pipes read by the loop, its exit found when they close or
    watched by a pidfd (`watch_exit`).

    `exited` resolves when the program exits even if children it left behind still hold
    the pipes open; `pipes_closed` when each output pipe reaches end of file. The pipes
    are read with `add_reader` on their descriptors (no transports: a step's output is a
    few lines, and two transports per step cost the loop more than the reading).
    """

    def __init__(self, started: _Started) -> None:
        self.proc = started.proc
        self.loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = self.loop.create_future()
        self.pipes_closed: dict[int, asyncio.Future[None]] = {}
        self.transports: list[asyncio.BaseTransport] = []
        self._fds: dict[int, int] = {1: started.stdout, 2: started.stderr}
        self._stdin = started.stdin
        self._reading: set[int] = set()
        self._pidfd: int | None = None
        self._watching = False
        self._watch_timer: asyncio.TimerHandle | None = None
        self._ended: asyncio.Future[None] | None = None
        self._drain: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def attach(self, splitters: dict[int, _LineSplitter], stdin: bytes | None) -> None:
        loop = self.loop
        self._watch_timer = loop.call_later(_WATCH_EXIT_AFTER, self.watch_exit)
        for stream, fd in self._fds.items():
            closed = self.pipes_closed[stream] = loop.create_future()
            loop.add_reader(fd, self._read, fd, splitters[stream], closed)
            self._reading.add(fd)
        if stdin is not None and self._stdin is not None:
            # Buffered by the transport; a program that exits unread just drops it.
            pipe = os.fdopen(self._stdin, "wb", buffering=0)
            self._stdin = None
            writer, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)
            self.transports.append(writer)
            writer.write(stdin)
            writer.close()

    def _read(self, fd: int, splitter: _LineSplitter, closed: asyncio.Future[None]) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # a broken pipe ends the stream like end of file
        if data:
            splitter.feed(data)
            return
        self._stop_reading(fd)
        splitter.finish()
        if not closed.done():
            closed.set_result(None)
        if not self.exited.done() and all(f.done() for f in self.pipes_closed.values()):
            self.watch_exit()
        self._check_ended()

    def _stop_reading(self, fd: int) -> None:
        if fd in self._reading:
            self._reading.discard(fd)
            self.loop.remove_reader(fd)

    def watch_exit(self) -> None:
        """Resolve `exited` when the program exits (now, if it has)."""
        if self._watching or self.exited.done():
            return
        self._watching = True
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None
        if self.proc.poll() is not None:
            self._set_exited()
            return
        try:
            self._pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            # No pidfd (old kernel, not Linux): a thread waits, as asyncio's watcher does.
            threading.Thread(target=self._wait_thread, daemon=True,
                             name=f"partitur-wait-{self.proc.pid}").start()
            return
        self.loop.add_reader(self._pidfd, self._reap)

    def _wait_thread(self) -> None:
        self.proc.wait()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self.loop.call_soon_threadsafe(self._set_exited)

    def _reap(self) -> None:
        if self.proc.poll() is not None:
            self._stop_watching()
            self._set_exited()

    def _set_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        self._check_ended()

    def ended(self) -> asyncio.Future[None]:
        """A new future, resolved once the program exited and its pipes reached end of
        file, or `_DRAIN_AFTER_EXIT` seconds after it exited (children left in the
        background may hold the pipes open)."""
        self._ended = self.loop.create_future()
        self._check_ended()
        return self._ended

    def _check_ended(self) -> None:
        ended = self._ended
        if ended is None or ended.done() or not self.exited.done():
            return
        if all(f.done() for f in self.pipes_closed.values()):
            ended.set_result(None)
        elif self._drain is None:
            self._drain = self.loop.call_later(_DRAIN_AFTER_EXIT, self._drained)

    def _drained(self) -> None:
        self._drain = None
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def _stop_watching(self) -> None:
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    def close(self) -> None:
        self._stop_watching()
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        for transport in self.transports:
            transport.close()
        for fd in (*self._fds.values(), self._stdin):
            if fd is None:
                continue
            self._stop_reading(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = {}
        self._stdin = None


def _environ_bytes() -> Mapping[bytes, bytes]:
    """This process's environment as bytes, without decoding and encoding every variable
    (iterating `os.environb` does, ~40 µs a step): `os.environ`'s own dict of them."""
    data = getattr(os.environ, "_data", None)
    if os.supports_bytes_environ and isinstance(data, dict):
        return data
    return os.environb


class _Pending:
    """A start prepared on the event loop: the pipes, and the `posix_spawn` call ready
    for a spawning thread (None: that thread uses `Popen`)."""

    def __init__(self, argv: Sequence[str], cwd: Path,
                 env: Mapping[str, str] | Mapping[bytes, bytes], with_stdin: bool,
                 inherit_env: bool) -> None:
        if inherit_env:
            env = {**_environ_bytes(), **{os.fsencode(k): os.fsencode(v) for k, v in env.items()}}
        self.argv, self.cwd, self.env = argv, cwd, env
        # Pipes made here rather than by Popen: the parent keeps bare descriptors (no file
        # objects), non-blocking for the loop; the child's ends are blocking.
        self.out_r, self.out_w = os.pipe2(os.O_CLOEXEC)
        self.err_r, self.err_w = os.pipe2(os.O_CLOEXEC)
        self.in_r: int | None = None
        self.in_w: int | None = None
        if with_stdin:
            self.in_r, self.in_w = os.pipe2(os.O_CLOEXEC)
        try:
            self.prepared = prepare_spawn(argv, cwd=cwd, env=env, stdin=self.in_r,
                                          stdout=self.out_w, stderr=self.err_w)
        except BaseException:
            self.close_child_ends()
            self.close_own_ends()
            raise

    def start(self, make_dir: Path | None) -> subprocess.Popen[bytes] | _Spawned:
        """In a spawning thread: the artifacts folder, then the program."""
        if make_dir is not None:
            make_step_dir(make_dir)
        if self.prepared is not None:
            return _Spawned(self.prepared.start())
        return subprocess.Popen(
            list(self.argv),
            stdin=subprocess.DEVNULL if self.in_r is None else self.in_r,
            stdout=self.out_w,
            stderr=self.err_w,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
        )

    def started(self, proc: subprocess.Popen[bytes] | _Spawned) -> _Started:
        """Back on the loop, once `start` returned."""
        self.close_child_ends()
        os.set_blocking(self.out_r, False)
        os.set_blocking(self.err_r, False)
        return _Started(proc, self.out_r, self.err_r, self.in_w)

    def close_child_ends(self) -> None:
        if self.prepared is not None:
            self.prepared.close()
        for fd in (self.out_w, self.err_w, self.in_r):
            if fd is not None:
                os.close(fd)

    def close_own_ends(self) -> None:
        for fd in (self.out_r, self.err_r, self.in_w):
            if fd is not None:
                os.close(fd)


def _kill_orphan(pending: _Pending, spawn: asyncio.Future[subprocess.Popen[bytes] | _Spawned]
                 ) -> None:
    """The caller was cancelled while its process was being started: end that process."""
    pending.close_child_ends()
    pending.close_own_ends()
    if spawn.cancelled() or spawn.exception() is not None:
        return
    proc = spawn.result()
    with contextlib.suppress(ValueError):
        kill_process_group(proc.pid, signal.SIGKILL)
    _SPAWNER.detach(proc.wait)  # reap it (killed: a moment)


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
    make_dir: Path | None = None,
    inherit_env: bool = False,
) -> ProcessResult:
    """Run `argv` to its end (or `timeout`), logging every line; see the module docstring.

    Raises `OSError` when the program cannot be started. `on_stdout` sees every stdout
    line after it was logged (the shell runner looks for `OUTPUT:` lines there). `stdin`,
    when given, is written to the program's standard input, which is then closed.
    `make_dir` (the step's artifacts folder) is created first, with the spawn, off the
    event loop: creating a directory costs a journal write (~0.4 ms on a busy disk).
    With `inherit_env`, `env` is laid over this process's environment.
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
    pending = _Pending(argv, cwd, env, stdin is not None, inherit_env)
    spawn = _SPAWNER.run(pending.start, make_dir)
    try:
        proc = await asyncio.shield(spawn)
    except asyncio.CancelledError:
        spawn.add_done_callback(functools.partial(_kill_orphan, pending))
        raise
    except BaseException:
        pending.close_child_ends()
        pending.close_own_ends()
        raise
    started = pending.started(proc)
    child = _Child(started)
    pgid = started.proc.pid
    timed_out = False
    try:
        on_start(pgid)
        await child.attach(splitters, stdin)
        try:
            # `ended` is a future of its own: a timeout or cancellation cancels it, not
            # `exited`, which the cleanup waits on.
            if timeout is None:
                await child.ended()
            else:
                async with asyncio.timeout(timeout):
                    await child.ended()
        except TimeoutError:
            timed_out = True
    finally:
        if child.exited.done() and all(f.done() for f in child.pipes_closed.values()):
            # The usual end: the program exited and its pipes are drained. What it left
            # running in its group (holding no pipe) is killed now.
            try:
                kill_process_group(pgid, signal.SIGKILL)
            finally:
                child.close()
        else:
            # Runs on timeout and cancellation alike; shielded so that a second
            # cancellation cannot leave the group half-killed.
            await asyncio.shield(_cleanup(pgid, child, grace))
    return ProcessResult(
        returncode=None if timed_out else child.returncode,
        timed_out=timed_out,
        stderr_tail=list(stderr_tail),
    )


async def _cleanup(pgid: int, child: _Child, grace: float) -> None:
    try:
        child.watch_exit()
        if not child.exited.done():
            kill_process_group(pgid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(child.exited), grace)
        kill_process_group(pgid, signal.SIGKILL)
        if not child.exited.done():
            await child.exited
        # With the group dead the pipes close; take what is left in them.
        if child.pipes_closed:
            await asyncio.wait(child.pipes_closed.values(), timeout=_DRAIN_AFTER_EXIT)
    finally:
        child.close()
