"""Where log lines are kept: the `LogStore` interface and its JSONL-file backend (DESIGN §7).

`JsonlLogStore` keeps one file `<dir>/<job_id>.jsonl` per job, one reference JSONL object
per line. A line's `seq` is its line number. Every append is one plain `write(2)` on a
file opened with `O_APPEND` and no user-space buffer, so a line is in the OS once
`append` returns: a `kill -9` of the server loses nothing already appended (a machine
crash can, until `sync`). On reopen a torn last line (no trailing newline) is cut away and
numbering continues from the number of complete lines.

`append_once` stores a numbered batch of a series (a remote worker's output under one
lease) at most once. Every store keeps how far each series is stored durably and
together with the lines; in a JSONL file that is a `"pos": [<key hash>, <next>]` member
on the last line of each such batch, written by the same `write(2)` (readers ignore it),
and read back from the file when the job's file is next opened.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from engine.errors import ValidationFailed
from engine.logs.model import LogLine

_JOB_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
_INLINE_READ_LIMIT = 4 * 1024 * 1024
_CHUNK = 1024 * 1024


def check_job_id(job_id: str) -> str:
    """Return `job_id` if it is safe as a file name; raise `ValidationFailed` otherwise."""
    if not _JOB_ID.fullmatch(job_id) or job_id in (".", ".."):
        raise ValidationFailed(f"invalid job id {job_id!r}")
    return job_id


class LogStore(ABC):
    """The log lines of every job, in order, addressable by `seq` (1-based)."""

    @abstractmethod
    async def append(self, job_id: str, lines: Sequence[LogLine]) -> list[LogLine]:
        """Append `lines` to the job's log; return them with their `seq` assigned."""

    @abstractmethod
    async def read(
        self, job_id: str, *, step: str | None = None, after: int = 0, limit: int | None = None
    ) -> list[LogLine]:
        """Lines with `seq > after`, optionally of one step only, at most `limit` of them."""

    @abstractmethod
    async def count(self, job_id: str) -> int:
        """How many lines the job's log holds (the `seq` of its last line)."""

    async def append_once(
        self, job_id: str, key: str, offset: int, lines: Sequence[LogLine]
    ) -> tuple[list[LogLine], int]:
        """Append lines `offset`, `offset + 1`, … of the series `key`, skipping those
        stored before (a batch sent again); return the lines stored now and the series'
        next index. The position is kept with the lines, so another store on the same
        data, or this one after a restart, skips them too. A gap (`offset` past the next
        index) is accepted: the position moves to the batch's end."""
        raise NotImplementedError(f"{type(self).__name__} cannot append batches once")

    def prepare(self, job_id: str) -> None:  # noqa: B027 - optional for backends
        """A new job's log gets its first line soon: get ready for it without blocking
        the caller (the first append must work whether or not this has finished)."""

    async def forget(self, job_id: str, key: str) -> None:  # noqa: B027 - optional
        """The series `key` is over: its position may be dropped."""

    async def sync(self, job_id: str) -> None:  # noqa: B027 - optional for backends
        """Make the job's lines durable against a machine crash."""

    async def finish(self, job_id: str) -> None:  # noqa: B027 - optional for backends
        """The job will get no more lines: make them durable and release resources."""

    @abstractmethod
    async def close(self) -> None:
        """Release every resource the store holds."""


@dataclass(slots=True)
class _OpenLog:
    fd: int
    count: int
    positions: dict[str, int] | None = None  # series key hash → next index, read lazily


def series_hash(key: str) -> str:
    """What a JSONL file keeps of a series key (a lease token is a secret)."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _read_positions(path: Path) -> dict[str, int]:
    """The last `pos` mark of each series in the file (its complete lines only)."""
    positions: dict[str, int] = {}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return positions
    end = data.rfind(b"\n") + 1
    for raw in data[:end].split(b"\n"):
        if b'"pos":[' not in raw:
            continue
        mark = orjson.loads(raw).get("pos")
        if isinstance(mark, list) and len(mark) == 2:
            positions[str(mark[0])] = int(mark[1])
    return positions


def _count_lines(path: Path, *, repair: bool) -> int:
    """Count the complete lines of `path`; with `repair`, truncate a torn last line away."""
    lines = 0
    last_newline_end = 0
    with path.open("rb") as fh:
        offset = 0
        while chunk := fh.read(_CHUNK):
            n = chunk.count(b"\n")
            if n:
                lines += n
                last_newline_end = offset + chunk.rindex(b"\n") + 1
            offset += len(chunk)
    if repair and last_newline_end != offset:
        os.truncate(path, last_newline_end)
    return lines


def _parse(data: bytes, *, step: str | None, after: int, limit: int | None) -> list[LogLine]:
    out: list[LogLine] = []
    raw_lines = data.split(b"\n")
    raw_lines.pop()  # after the last newline: empty, or a line still being written
    for seq in range(after + 1, len(raw_lines) + 1):
        line = LogLine.from_json(raw_lines[seq - 1], seq)
        if step is not None and line.step != step:
            continue
        out.append(line)
        if limit is not None and len(out) >= limit:
            break
    return out


class JsonlLogStore(LogStore):
    """One JSONL file per job under `directory`.

    At most `max_open` files are kept open; the least recently written one is closed when
    more are needed (its lines are already in the OS). Appends are synchronous file writes
    (`append_sync`, a few microseconds) so a caller on the event loop keeps line order
    without awaiting; the async `append` is the same call.
    """

    def __init__(self, directory: Path, *, max_open: int = 256) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._max_open = max_open
        self._open: OrderedDict[str, _OpenLog] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, job_id: str) -> Path:
        """The file holding the job's log."""
        return self.directory / f"{check_job_id(job_id)}.jsonl"

    def _handle(self, job_id: str) -> _OpenLog:
        handle = self._open.get(job_id)
        if handle is not None:
            self._open.move_to_end(job_id)
            return handle
        path = self.path(job_id)
        count = _count_lines(path, repair=True) if path.exists() else 0
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        handle = self._open[job_id] = _OpenLog(fd, count)
        while len(self._open) > self._max_open:
            _, oldest = self._open.popitem(last=False)
            os.close(oldest.fd)
        return handle

    def prepare(self, job_id: str) -> None:
        """Create and open a new job's file on a worker thread, so the first append on
        the event loop finds it open (creating a file costs the loop ~0.5 ms on a busy
        machine). Appends never wait for it: if it has not finished, the first append
        opens the file itself and the prepared descriptor is dropped."""
        path = self.path(job_id)
        try:
            asyncio.get_running_loop().run_in_executor(None, self._prepare_sync, job_id, path)
        except RuntimeError:  # no running loop, or its executor is shut down
            pass

    def _prepare_sync(self, job_id: str, path: Path) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return  # the first append opens it (and reports the error) itself
        keep = False
        try:
            with self._lock:
                # Only an empty file nobody here holds open: its line count is 0. (A
                # file with lines is counted, and a torn line cut, by `_handle`.)
                if job_id not in self._open and os.fstat(fd).st_size == 0:
                    self._open[job_id] = _OpenLog(fd, 0)
                    keep = True
                    while len(self._open) > self._max_open:
                        _, oldest = self._open.popitem(last=False)
                        os.close(oldest.fd)
        finally:
            if not keep:
                os.close(fd)

    def append_sync(self, job_id: str, lines: Sequence[LogLine]) -> list[LogLine]:
        """Append `lines` with one write; return them with their `seq` assigned."""
        if not lines:
            return []
        with self._lock:
            handle = self._handle(job_id)
            count = handle.count
            # LogLine(...) rather than `with_seq` (dataclasses.replace): one line per note.
            placed = [LogLine(line.ts, line.stream, line.step, line.line, count + i)
                      for i, line in enumerate(lines, 1)]
            data = (placed[0].to_json() + b"\n" if len(placed) == 1 else
                    b"".join(line.to_json() + b"\n" for line in placed))
            written = os.write(handle.fd, data)
            if written < len(data):
                view = memoryview(data)[written:]
                while view:
                    written = os.write(handle.fd, view)
                    view = view[written:]
            handle.count = count + len(placed)
            return placed

    async def append(self, job_id: str, lines: Sequence[LogLine]) -> list[LogLine]:
        return self.append_sync(job_id, lines)

    def append_once_sync(
        self, job_id: str, key: str, offset: int, lines: Sequence[LogLine]
    ) -> tuple[list[LogLine], int]:
        """The blocking form of `append_once`."""
        tag = series_hash(key)
        with self._lock:
            handle = self._handle(job_id)
            if handle.positions is None:
                handle.positions = _read_positions(self.path(job_id))
            start = handle.positions.get(tag, 0)
            end = max(start, offset + len(lines))
            fresh = lines[max(0, start - offset):]
            if not fresh:
                handle.positions[tag] = end
                return [], end
            placed = [line.with_seq(handle.count + i) for i, line in enumerate(fresh, 1)]
            chunks = [line.to_json() + b"\n" for line in placed[:-1]]
            chunks.append(orjson.dumps({**placed[-1].to_dict(), "pos": [tag, end]}) + b"\n")
            view = memoryview(b"".join(chunks))
            while view:
                written = os.write(handle.fd, view)
                view = view[written:]
            handle.count += len(placed)
            handle.positions[tag] = end
            return placed, end

    async def append_once(
        self, job_id: str, key: str, offset: int, lines: Sequence[LogLine]
    ) -> tuple[list[LogLine], int]:
        return self.append_once_sync(job_id, key, offset, lines)

    async def forget(self, job_id: str, key: str) -> None:
        with self._lock:
            handle = self._open.get(job_id)
            if handle is not None and handle.positions is not None:
                handle.positions.pop(series_hash(key), None)

    def read_sync(
        self, job_id: str, *, step: str | None = None, after: int = 0, limit: int | None = None
    ) -> list[LogLine]:
        """The blocking form of `read`."""
        try:
            data = self.path(job_id).read_bytes()
        except FileNotFoundError:
            return []
        return _parse(data, step=step, after=max(after, 0), limit=limit)

    async def read(
        self, job_id: str, *, step: str | None = None, after: int = 0, limit: int | None = None
    ) -> list[LogLine]:
        path = self.path(job_id)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return []
        if size <= _INLINE_READ_LIMIT:
            return self.read_sync(job_id, step=step, after=after, limit=limit)
        return await asyncio.to_thread(
            self.read_sync, job_id, step=step, after=after, limit=limit
        )

    async def count(self, job_id: str) -> int:
        with self._lock:
            handle = self._open.get(job_id)
            if handle is not None:
                return handle.count
        try:
            return _count_lines(self.path(job_id), repair=False)
        except FileNotFoundError:
            return 0

    async def sync(self, job_id: str) -> None:
        with self._lock:
            handle = self._open.get(job_id)
            fd = os.dup(handle.fd) if handle is not None else None
        if fd is not None:
            try:
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)

    async def finish(self, job_id: str) -> None:
        with self._lock:
            handle = self._open.pop(job_id, None)
        if handle is not None:
            try:
                await asyncio.to_thread(os.fsync, handle.fd)
            finally:
                os.close(handle.fd)

    async def close(self) -> None:
        with self._lock:
            handles = list(self._open.values())
            self._open.clear()
        for handle in handles:
            try:
                await asyncio.to_thread(os.fsync, handle.fd)
            finally:
                os.close(handle.fd)
