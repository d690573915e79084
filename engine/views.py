"""JSON shapes of jobs and steps, as the workspace API (`/api`) returns them.

Shared by the HTTP routes and `partitur run --json`, so both print the same thing. The
field names follow the Strøm API reference; timestamps are ISO 8601 in UTC.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.core.projections import JobRow, StepRow


def iso(ts: float | None) -> str | None:
    """Epoch seconds → `2026-01-02T03:04:05.678901Z` (None stays None)."""
    if ts is None:
        return None
    # orjson writes a datetime as `isoformat()` does, in half the time of `isoformat`.
    return orjson.dumps(datetime.fromtimestamp(ts, UTC), option=orjson.OPT_UTC_Z)[1:-1].decode()


def job_summary(row: JobRow) -> dict[str, Any]:
    """An entry of `GET /api/jobs`."""
    return {
        "job_id": row.job_id,
        "workspace": row.workspace,
        "task_name": row.task_name,
        "mode": "distributed",
        "status": row.status,
        "source_type": row.source_type,
        "source_id": row.source_id,
        "created_at": iso(row.created_at),
        "started_at": iso(row.started_at),
        "completed_at": iso(row.completed_at),
        "parent_job_id": row.parent_job_id,
        "revision": row.revision,
        "priority": row.priority,
    }


def step_view(row: StepRow, runner: str = "local") -> dict[str, Any]:
    """A step of `GET /api/jobs/{id}`."""
    return {
        "step_name": row.step_name,
        "action_name": row.action_name,
        "action_type": row.action_type,
        "runner": runner,
        "input": row.input,
        "output": row.output,
        "status": row.status,
        "worker_id": row.worker_id,
        "started_at": iso(row.started_at),
        "completed_at": iso(row.completed_at),
        "error_message": row.error_message,
        "error_kind": row.error_kind,
        "exit_code": row.exit_code,
        "attempt": row.attempt,
        "loop_of": row.loop_of,
        "loop_index": row.loop_index,
        "depends_on": list(row.depends_on),
        "skip_reason": row.skip_reason,
        "message": row.message,
        "retry_at": iso(row.retry_at),
        "child_job_id": row.child_job_id,
    }


def job_detail(
    row: JobRow, steps: Sequence[StepRow], children: Sequence[str] = ()
) -> dict[str, Any]:
    """`GET /api/jobs/{id}`: the job summary, its input and output, and every step."""
    detail = job_summary(row)
    detail.update({
        "input": row.input,
        "output": row.output,
        "error": row.error,
        "created_by": row.created_by,
        "retry_of_job_id": row.retry_of,
        "children": list(children),
        "steps": [step_view(s) for s in steps],
    })
    return detail
