"""The invariant checker run after every fault scenario (issue 7).

`check_invariants(db_url, acknowledged=…)` opens the store directly and asserts:
- every job is terminal or still progressing (a step ready, running, suspended, or a
  retry pending), and a step running on a remote worker still holds an open lease
  (one whose lease was closed would never end);
- the projections equal a rebuild from the events (`job_row`/`step_rows` of the fold);
- each step's attempts match its events: attempts claimed in order 1…n, at most one
  claim and at most one end (completed/failed/cancelled) per attempt;
- nothing acknowledged is lost or duplicated: every acknowledged job exists once, each
  stream's versions are 1…n, global seqs are unique, every acknowledged event is still
  there (same version, seq and type), every acknowledged log line is still there, per-job
  log seqs are unique, and lines named `unique_lines` occur at most once per attempt of
  their step.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.core import events as ev
from engine.core.projections import job_row, step_rows
from engine.core.state import StepStatus, fold
from engine.logs.pgstore import PostgresLogStore
from engine.logs.store import JsonlLogStore, LogStore
from engine.store.factory import open_store
from engine.store.work import work_store

PROGRESSING = {StepStatus.READY, StepStatus.RUNNING, StepStatus.SUSPENDED}


async def check_invariants(
    db_url: str,
    *,
    logs_dir: Path | None = None,
    acknowledged_jobs: Iterable[str] = (),
    acknowledged_lines: Mapping[str, Iterable[tuple[int, str]]] | None = None,
    acknowledged_events: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
    unique_lines: str | None = None,
    allow_running: bool = False,
) -> dict[str, Any]:
    """Assert the invariants; returns counts for the test to report."""
    store = open_store(db_url)
    await store.open()
    logs: LogStore = (PostgresLogStore(db_url) if db_url.startswith("postgres")
                      else JsonlLogStore(logs_dir or Path(".")))
    try:
        ids = await store.stream_ids()
        assert len(ids) == len(set(ids)), "a stream is listed twice"
        for job_id in acknowledged_jobs:
            assert job_id in ids, f"acknowledged job {job_id} is lost"
        seqs: set[int] = set()
        events_total = 0
        for job_id in ids:
            records = await store.read(job_id)
            assert [r.version for r in records] == list(range(1, len(records) + 1)), job_id
            for r in records:
                assert r.global_seq not in seqs, f"global seq {r.global_seq} twice"
                seqs.add(r.global_seq)
            events_total += len(records)
            stored_events = {(r.version, r.global_seq, r.type) for r in records}
            for item in (acknowledged_events or {}).get(job_id, ()):
                key = (item["version"], item["global_seq"], item["type"])
                assert key in stored_events, f"{job_id}: acknowledged event {key} lost"
            state = fold(r.event() for r in records)
            # Projections equal a rebuild from the events.
            assert await store.get_job(job_id) == job_row(state), f"job row of {job_id}"
            assert await store.get_steps(job_id) == step_rows(state), f"step rows of {job_id}"
            # Terminal, or still progressing.
            if not state.terminal:
                moving = any(s.status in PROGRESSING or s.retry_at is not None
                             for s in state.steps.values())
                assert allow_running or moving, f"job {job_id} is stuck: {state.status}"
            await _check_leases(store, job_id, state)
            _check_attempts(job_id, [r.event() for r in records])
            await _check_lines(logs, job_id, (acknowledged_lines or {}).get(job_id, ()),
                               unique_lines, state)
        return {"jobs": len(ids), "events": events_total}
    finally:
        await logs.close()
        await store.close()


async def _check_leases(store: Any, job_id: str, state: Any) -> None:
    work = work_store(store)
    if work is None:
        return
    for name, step in state.steps.items():
        if step.status is not StepStatus.RUNNING or not step.lease:
            continue
        held = await work.held(step.lease)
        # Steps of the embedded executor have no queue row.
        assert held is None or held.finished_at is None, \
            f"{job_id}/{name}: running, but its lease was closed ({held.outcome})"


def _check_attempts(job_id: str, events: list[ev.Event]) -> None:
    claims: dict[str, list[int]] = {}
    ends: Counter[tuple[str, int]] = Counter()
    current: dict[str, int] = {}
    for event in events:
        if isinstance(event, ev.StepReady):
            current[event.step] = event.attempt
        elif isinstance(event, ev.StepClaimed):
            claims.setdefault(event.step, []).append(event.attempt)
            current[event.step] = event.attempt
        elif isinstance(event, ev.StepCompleted | ev.StepFailed | ev.StepCancelled):
            if isinstance(event, ev.StepCompleted) and event.reused_from:
                continue
            ends[(event.step, current.get(event.step, 0))] += 1
    for step, attempts in claims.items():
        assert attempts == sorted(set(attempts)), f"{job_id}/{step}: claims {attempts}"
        assert attempts == list(range(attempts[0], attempts[0] + len(attempts))), \
            f"{job_id}/{step}: attempts {attempts} skip one"
    for (step, attempt), n in ends.items():
        assert n <= 1, f"{job_id}/{step}: attempt {attempt} ended {n} times"


async def _check_lines(logs: LogStore, job_id: str, acknowledged: Iterable[tuple[int, str]],
                       unique: str | None, state: Any) -> None:
    lines = await logs.read(job_id)
    seqs = [line.seq for line in lines]
    assert len(seqs) == len(set(seqs)), f"{job_id}: a log seq twice"
    stored = {(line.seq, line.line) for line in lines}
    for item in acknowledged:
        assert tuple(item) in stored, f"{job_id}: acknowledged line {item} lost"
    if unique is None:
        return
    pattern = re.compile(unique)
    counts = Counter((line.step, line.line) for line in lines if pattern.search(line.line))
    for (step, text), n in counts.items():
        attempts = max(1, state.steps[step].attempt) if step in state.steps else 1
        assert n <= attempts, f"{job_id}/{step}: {text!r} logged {n} times"
