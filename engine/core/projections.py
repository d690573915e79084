"""The `jobs` and `steps` projections: what the API lists, computed from a job's state.

Stores write these rows in the same transaction as the events that produced them, with
the job's last applied `global_seq`; `partitur rebuild` recomputes them from the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.core.frozen import fast_new
from engine.core.state import JobState, StepState


@dataclass(frozen=True, slots=True)
class StepRow:
    """One row of the `steps` projection (API: a step of `GET /api/jobs/{id}`)."""

    job_id: str
    step_name: str
    position: int
    action_name: str
    action_type: str
    status: str
    attempt: int
    input: Any
    output: Any
    error_message: str | None
    error_kind: str | None
    exit_code: int | None
    worker_id: str | None
    started_at: float | None
    completed_at: float | None
    loop_of: str | None
    loop_index: int | None
    skip_reason: str | None
    message: str | None
    depends_on: tuple[str, ...]
    retry_at: float | None
    child_job_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class JobRow:
    """One row of the `jobs` projection (API: an entry of `GET /api/jobs`)."""

    job_id: str
    workspace: str
    task_name: str
    revision: str
    status: str
    source_type: str
    source_id: str | None
    parent_job_id: str | None
    input: Mapping[str, Any]
    output: Mapping[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    priority: int
    created_by: str | None
    retry_of: str | None
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


PAUSED = "paused"
# Rows are built once per job and step on every projection write and for the whole log on
# rebuild: without the frozen `__init__`.
# Constructors of the rows taking every field (several times faster than the frozen
# `__init__`): the stores build their rows with them too.
new_job_row = fast_new(JobRow)
new_step_row = fast_new(StepRow)


def job_status(state: JobState) -> str:
    """The status the API shows: the job's status, or `paused` while an operator holds
    a job that has not ended (`JobStatus` stays `running`/`pending` underneath)."""
    if state.paused and not state.terminal:
        return PAUSED
    return state.status.value


def job_row(state: JobState) -> JobRow:
    """The `jobs` row of a job."""
    return new_job_row(
        job_id=state.job_id, workspace=state.workspace, task_name=state.task,
        revision=state.revision, status=job_status(state), source_type=state.source_type,
        source_id=state.source_id, parent_job_id=state.parent, input=state.input,
        output=state.output, error=state.error, created_at=state.created_at,
        started_at=state.started_at, completed_at=state.completed_at,
        priority=state.priority, created_by=state.created_by, retry_of=state.retry_of,
        version=state.version,
    )


def step_row(state: JobState, step: StepState, position: int) -> StepRow:
    """The `steps` row of one step of a job."""
    plan_step = state.plan.steps[step.loop_of or step.name]
    return new_step_row(
        job_id=state.job_id, step_name=step.name, position=position,
        action_name=plan_step.action_name, action_type=plan_step.action_type,
        status=step.status.value, attempt=step.attempt, input=step.input, output=step.output,
        error_message=step.error, error_kind=step.error_kind, exit_code=step.exit_code,
        worker_id=step.worker_id, started_at=step.started_at, completed_at=step.completed_at,
        loop_of=step.loop_of, loop_index=step.loop_index, skip_reason=step.skip_reason,
        message=step.message, depends_on=plan_step.depends_on if step.loop_of is None else (),
        retry_at=step.retry_at, child_job_id=step.child_job_id,
    )


def step_rows(state: JobState, only: set[str] | None = None) -> list[StepRow]:
    """The `steps` rows of a job (all of them, or those named in `only`)."""
    if only is None:
        return [step_row(state, step, position)
                for position, step in enumerate(state.steps.values())]
    positions = _positions(state)
    return [step_row(state, state.steps[name], positions[name])
            for name in sorted(only, key=positions.__getitem__) if name in state.steps]


# job id → (plan, step count, {step: position}); positions change only when a loop
# expands, and a job folded again (another plan object) gets its positions anew.
_POSITIONS: dict[str, tuple[object, int, dict[str, int]]] = {}


def _positions(state: JobState) -> dict[str, int]:
    cached = _POSITIONS.get(state.job_id)
    if cached is not None and cached[0] is state.plan and cached[1] == len(state.steps):
        return cached[2]
    positions = {name: i for i, name in enumerate(state.steps)}
    if len(_POSITIONS) > 4096:
        _POSITIONS.clear()
    _POSITIONS[state.job_id] = (state.plan, len(state.steps), positions)
    return positions
