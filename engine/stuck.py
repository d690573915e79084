"""Stuck jobs: a job that has not ended and recorded no event for longer than
`stuck_after` (server config) is flagged in the job list and counted in `/metrics`.

A paused job is not stuck (an operator holds it), and neither is one whose unfinished
steps all wait for an approval: both wait on a person, which `explain` says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from engine.core.projections import JobRow
from engine.core.state import JOB_TERMINAL, JobState, StepStatus

if TYPE_CHECKING:
    from engine.orchestrator import Orchestrator

_WAITING_ON_PEOPLE = frozenset({StepStatus.SUSPENDED})


def is_stuck(state: JobState, now: float, after: float) -> bool:
    """Whether `state` made no progress (no event) for more than `after` seconds."""
    if state.terminal or state.paused:
        return False
    if now - state.last_event_at <= after:
        return False
    unfinished = [s for s in state.steps.values() if not s.terminal and s.items is None]
    return not (unfinished and all(s.status in _WAITING_ON_PEOPLE for s in unfinished))


def stuck_jobs(states: Iterable[JobState], now: float, after: float) -> list[JobState]:
    """The stuck ones among `states`."""
    return [s for s in states if is_stuck(s, now, after)]


async def stuck_ids(orchestrator: Orchestrator, rows: Sequence[JobRow], after: float) -> set[str]:
    """The ids of the stuck jobs among `rows` (a page of the job list)."""
    now = orchestrator.clock.now()
    found: set[str] = set()
    for row in rows:
        if row.status in JOB_TERMINAL:
            continue
        state = orchestrator.active_state(row.job_id) or await orchestrator.get_state(row.job_id)
        if is_stuck(state, now, after):
            found.add(row.job_id)
    return found
