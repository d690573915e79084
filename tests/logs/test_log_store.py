from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.errors import ValidationFailed
from engine.logs.model import LogLine
from engine.logs.store import JsonlLogStore


def _lines(step: str, n: int, start: int = 0) -> list[LogLine]:
    return [LogLine(float(i), "stdout", step, f"{step} {i}") for i in range(start, start + n)]


async def test_append_assigns_seq_and_read_filters(tmp_path: Path) -> None:
    store = JsonlLogStore(tmp_path)
    first = await store.append("job-1", _lines("a", 3))
    second = await store.append("job-1", _lines("b", 2))
    assert [line.seq for line in first + second] == [1, 2, 3, 4, 5]
    assert await store.count("job-1") == 5

    everything = await store.read("job-1")
    assert [line.line for line in everything] == ["a 0", "a 1", "a 2", "b 0", "b 1"]
    assert [line.seq for line in await store.read("job-1", after=3)] == [4, 5]
    assert [line.seq for line in await store.read("job-1", step="b")] == [4, 5]
    assert [line.seq for line in await store.read("job-1", step="a", after=1, limit=1)] == [2]
    assert await store.read("job-1", limit=2) == everything[:2]
    assert await store.read("other") == []
    assert await store.count("other") == 0
    await store.close()

    # The file is the reference JSONL, one object per line.
    text = (tmp_path / "job-1.jsonl").read_bytes()
    assert text.splitlines()[0] == everything[0].to_json()


async def test_reopen_after_torn_write_continues_numbering(tmp_path: Path) -> None:
    store = JsonlLogStore(tmp_path)
    await store.append("j", _lines("a", 4))
    await store.close()
    path = tmp_path / "j.jsonl"
    # A crash mid-write leaves half a line without its newline.
    with path.open("ab") as fh:
        fh.write(b'{"ts":"1970-01-01T00:00:00.000000Z","stream":"std')

    # Readers never see the torn line, even before a writer repairs the file.
    reader = JsonlLogStore(tmp_path)
    assert await reader.count("j") == 4
    assert len(await reader.read("j")) == 4

    store = JsonlLogStore(tmp_path)
    placed = await store.append("j", _lines("b", 2))
    assert [line.seq for line in placed] == [5, 6]
    lines = await store.read("j")
    assert [line.seq for line in lines] == [1, 2, 3, 4, 5, 6]
    assert [line.line for line in lines[-2:]] == ["b 0", "b 1"]
    assert path.read_bytes().endswith(b"\n")
    await store.finish("j")
    assert await store.count("j") == 6
    await store.close()


async def test_many_jobs_beyond_max_open(tmp_path: Path) -> None:
    store = JsonlLogStore(tmp_path, max_open=2)
    for round_ in range(3):
        for job in ("a", "b", "c", "d"):
            placed = await store.append(job, _lines(job, 1, round_))
            assert placed[0].seq == round_ + 1
    for job in ("a", "b", "c", "d"):
        assert [line.line for line in await store.read(job)] == [f"{job} 0", f"{job} 1",
                                                                  f"{job} 2"]
    await store.sync("d")
    await store.close()


@pytest.mark.parametrize("job_id", ["../x", "a/b", "..", ".", "", "a b", "x\x00"])
async def test_job_ids_cannot_escape_the_directory(tmp_path: Path, job_id: str) -> None:
    store = JsonlLogStore(tmp_path)
    with pytest.raises(ValidationFailed):
        await store.append(job_id, _lines("a", 1))
    with pytest.raises(ValidationFailed):
        await store.read(job_id)


async def test_large_log_is_read_off_the_loop(tmp_path: Path) -> None:
    store = JsonlLogStore(tmp_path)
    big = "x" * 5000
    store.append_sync("big", [LogLine(1.0, "stdout", "s", big)] * 1200)
    assert (tmp_path / "big.jsonl").stat().st_size > 4 * 1024 * 1024
    lines = await store.read("big", after=1190)
    assert [line.seq for line in lines] == list(range(1191, 1201))
    assert lines[0].line == big
    await store.close()


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.logs.model import LogLine
    from engine.logs.store import JsonlLogStore

    store = JsonlLogStore(Path(sys.argv[1]))
    n = 0
    while True:
        n += 1
        store.append_sync("killed", [LogLine(time.time(), "stdout", "s", f"line {n}")])
        print(f"acked {n}", flush=True)
    """
)


def test_kill_9_loses_no_acked_line(tmp_path: Path) -> None:
    # Start a writer that appends as fast as it can and acknowledges every line.
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    ) as child:
        assert child.stdout is not None
        acked = 0
        for text in child.stdout:
            acked = int(text.split()[1])
            if acked >= 300:
                break
        # Kill it mid-stream, without any chance to flush or close.
        os.kill(child.pid, signal.SIGKILL)
        for text in child.stdout:
            acked = int(text.split()[1])
    assert child.returncode == -signal.SIGKILL

    store = JsonlLogStore(tmp_path)
    lines = store.read_sync("killed")
    assert len(lines) >= acked >= 300
    assert [line.line for line in lines[:acked]] == [f"line {n}" for n in range(1, acked + 1)]
    placed = store.append_sync("killed", [LogLine(0.0, "stdout", "s", "after restart")])
    assert placed[0].seq == len(lines) + 1


async def test_prepared_file_is_opened_off_the_loop_and_numbering_holds(tmp_path: Path) -> None:
    store = JsonlLogStore(tmp_path)
    store.prepare("fresh")
    # A file with lines already (a job id given again) is left to the lazy open,
    # which counts its lines.
    (tmp_path / "old.jsonl").write_bytes(b"".join(x.to_json() + b"\n" for x in _lines("a", 2)))
    store.prepare("old")
    for _ in range(500):
        if (tmp_path / "fresh.jsonl").exists() and "fresh" in store._open:
            break
        await asyncio.sleep(0.01)
    assert (tmp_path / "fresh.jsonl").exists()
    assert "fresh" in store._open
    assert [line.seq for line in await store.append("fresh", _lines("b", 2))] == [1, 2]
    await asyncio.sleep(0.2)  # let the prepare of "old" finish
    assert [line.seq for line in await store.append("old", _lines("b", 1))] == [3]
    # Prepared after lines were appended: the open handle (and its count) is kept.
    store.prepare("fresh")
    await asyncio.sleep(0.2)
    assert [line.seq for line in await store.append("fresh", _lines("c", 1))] == [3]
    assert [line.line for line in await store.read("fresh")] == ["b 0", "b 1", "c 0"]
    await store.close()
