"""`partitur rebuild`: the projections rebuilt from the log equal the ones the runs wrote,
in one process or in several (one shard of the jobs each), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

WS = Path(__file__).parent.parent / "fixtures" / "cli_ws"
PASSWORD = "pw-given-9876"


def partitur(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args],
                          capture_output=True, text=True, timeout=120)


def projections(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        return {table: sorted(conn.execute(sql).fetchall()) for table, sql in TABLES.items()}


# The job counters without the zeros left where jobs moved on (a rebuild writes none).
TABLES = {"jobs": "SELECT * FROM jobs", "steps": "SELECT * FROM steps",
          "job_counts": "SELECT * FROM job_counts WHERE n <> 0"}


async def pg_projections(url: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(url)
    try:
        return {table: sorted(tuple(r) for r in await conn.fetch(sql))
                for table, sql in TABLES.items()}
    finally:
        await conn.close()


def run_jobs(url: str) -> None:
    """Runs that end in each way, one with a secret input."""
    runs = [("env",), ("fails",), ("typed", "-i", "count=3"),
            ("secret-input", "-i", f"password={PASSWORD}")]
    for task, *extra in runs:
        done = partitur("run", task, "--workspace", str(WS), "--db", url, *extra)
        assert done.returncode in (0, 1), done.stderr
        assert "Traceback" not in done.stderr


def replayed(done: subprocess.CompletedProcess[str]) -> tuple[int, int, str]:
    """(events, jobs, processes) from `partitur rebuild`'s line."""
    assert done.returncode == 0, done.stderr
    match = re.search(r"replayed (\d+) events of (\d+) jobs in .*, (\d+) process", done.stdout)
    assert match is not None, done.stdout
    return int(match.group(1)), int(match.group(2)), match.group(3)


def test_rebuild_equals_the_incremental_projections(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    url = f"sqlite:///{db}"
    run_jobs(url)
    before = projections(db)
    assert len(before["jobs"]) == 4
    # The secret input is masked in the rows the runs wrote...
    assert PASSWORD not in repr(before)

    events, jobs, processes = replayed(partitur("rebuild", "--db", url))
    assert events > 4 * 3 and (jobs, processes) == (4, "1")
    # ...and in the rebuilt ones, which are equal to them row for row.
    assert projections(db) == before

    # Three processes, one shard of the jobs each, write the same rows and counters.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM steps")
    assert replayed(partitur("rebuild", "--db", url, "--workers", "3")) == (events, 4, "3")
    assert projections(db) == before


def test_rebuild_in_processes_on_postgres(pg_url: str) -> None:
    run_jobs(pg_url)
    before = asyncio.run(pg_projections(pg_url))
    assert len(before["jobs"]) == 4 and len(before["job_counts"]) >= 2
    events, _, _ = replayed(partitur("rebuild", "--db", pg_url, "--workers", "1"))
    assert asyncio.run(pg_projections(pg_url)) == before
    assert replayed(partitur("rebuild", "--db", pg_url, "--workers", "2")) == (events, 4, "2")
    assert asyncio.run(pg_projections(pg_url)) == before


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stream_that_cannot_be_replayed_is_named_and_fails_the_rebuild(
    tmp_path: Path, workers: str
) -> None:
    db = tmp_path / "corrupt.db"
    url = f"sqlite:///{db}"
    assert partitur("run", "env", "--workspace", str(WS), "--db", url).returncode == 0
    with sqlite3.connect(db) as conn:
        stream, version, seq, ts = conn.execute(
            "SELECT stream_id, MAX(version), MAX(global_seq), MAX(ts) FROM events").fetchone()
        # A completed job started again: no valid stream holds this.
        conn.execute("INSERT INTO events (global_seq, stream_id, version, type, "
                     "schema_version, data, ts) VALUES (?, ?, ?, 'JobStarted', 1, '{}', ?)",
                     (seq + 1, stream, version + 1, ts))
    done = partitur("rebuild", "--db", url, "--workers", workers)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"event {seq + 1} (JobStarted, version {version + 1}) of stream {stream}" in (
        done.stderr)
    assert "cannot go from completed to running" in done.stderr
    assert "the projections are incomplete" in done.stderr


def test_rebuild_needs_a_worker(tmp_path: Path) -> None:
    done = partitur("rebuild", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--workers", "0")
    assert done.returncode == 2
    assert "--workers must be at least 1" in done.stderr
