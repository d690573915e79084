"""Task state: what a step's `STATE: {json}` line leaves for the task's next job.

A step's last `STATE:` line is recorded as `TaskStateSaved` in its job's stream. A new
job of the same task starts with the latest saved state (`TaskStateLoaded`), readable as
`state` in its templates and as `$PARTITUR_STATE` (JSON) in its steps. The event log is
the only storage, so this works on every store; the last `KEEP` snapshots of each task
are kept in memory, loaded from the newest `SCAN` jobs of the task on first use (their
`TaskStateSaved` events only, in one read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.core import events as ev
from engine.core.state import JobState
from engine.store.base import EventStore, JobFilter

KEEP = 10
SCAN = 50


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One saved task state: which job and step saved it, and when."""

    job_id: str
    step: str
    ts: float
    state: Any

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "step": self.step, "ts": self.ts, "state": self.state}


class TaskStates:
    """The last `keep` states of each task, newest first."""

    def __init__(self, store: EventStore, keep: int = KEEP) -> None:
        self.store = store
        self.keep = keep
        self._cache: dict[tuple[str, str], list[Snapshot]] = {}
        self._arriving: dict[tuple[str, str], list[Snapshot]] = {}

    async def history(self, workspace: str, task: str) -> list[Snapshot]:
        """The last snapshots of a task's state, newest first."""
        key = (workspace, task)
        cached = self._cache.get(key)
        if cached is None:
            # States saved while the store is read may be missing from what it returns.
            arriving = self._arriving.setdefault(key, [])
            loaded = await self._load(workspace, task)
            cached = self._cache.get(key)  # a concurrent load may have finished first
            if cached is None:
                cached = _newest([*arriving, *loaded], self.keep)
                self._cache[key] = cached
                self._arriving.pop(key, None)
        return list(cached)

    async def latest(self, workspace: str, task: str) -> Any:
        """The current state of a task (None before any step saved one)."""
        history = await self.history(workspace, task)
        return history[0].state if history else None

    def on_events(self, state: JobState, events: Sequence[ev.Event]) -> None:
        """Listener: remember states saved by steps of this process's jobs."""
        for event in events:
            if isinstance(event, ev.TaskStateSaved):
                key = (state.workspace, state.task)
                snapshot = Snapshot(state.job_id, event.step, event.ts, event.state)
                if key in self._cache:
                    self._cache[key] = [snapshot, *self._cache[key]][: self.keep]
                elif key in self._arriving:
                    self._arriving[key].append(snapshot)

    async def _load(self, workspace: str, task: str) -> list[Snapshot]:
        rows, _ = await self.store.list_jobs(
            JobFilter(workspace=workspace, task_name=task, limit=SCAN))
        records = await self.store.events_of_types([row.job_id for row in rows],
                                                   [ev.TaskStateSaved.__name__])
        found = [
            Snapshot(record.stream_id, event.step, event.ts, event.state)
            for record in records
            if isinstance(event := record.event(), ev.TaskStateSaved)
        ]
        found.sort(key=lambda s: -s.ts)
        return found[: self.keep]


def _newest(snapshots: list[Snapshot], keep: int) -> list[Snapshot]:
    """The newest `keep` distinct snapshots, newest first."""
    seen: set[tuple[str, str, float]] = set()
    unique = []
    for snapshot in snapshots:
        ident = (snapshot.job_id, snapshot.step, snapshot.ts)
        if ident not in seen:
            seen.add(ident)
            unique.append(snapshot)
    unique.sort(key=lambda s: -s.ts)
    return unique[:keep]
