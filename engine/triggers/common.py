"""What every trigger kind shares: its key, its rendered input, and the active-job lookup.

A trigger's `input` is a set of defaults that may use templates; they are rendered with
`secret` and the trigger kind's own context (`body`/`headers`/`method`/`query` for a
webhook, `job`/`output` for an event, `trigger` for a schedule). The values a trigger
*offers* (a webhook's request, an event's finished job) are then merged over those
defaults, but only for fields the task's input schema declares, so a task takes what it
asks for and the task's schema validates it like any other input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.compiler.templating import render_value
from engine.model import TaskSpec, TriggerSpec
from engine.store.base import EventStore, JobFilter

ACTIVE = ("pending", "running")


def trigger_key(workspace: str, trigger: str) -> str:
    """The trigger's id across the system: the jobs' `source_id`, the cron slots' key."""
    return f"{workspace}/{trigger}"


def trigger_input(
    spec: TriggerSpec,
    task: TaskSpec,
    *,
    secrets: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
    offered: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The raw job input: rendered defaults, with the declared offered fields over them."""
    ctx = {"secret": dict(secrets), **(context or {})}
    raw = render_value(dict(spec.input), ctx, where="input") if spec.input else {}
    result: dict[str, Any] = dict(raw)
    for key, value in (offered or {}).items():
        if key in task.input:
            result[key] = value
    return result


async def active_jobs(store: EventStore, workspace: str, task: str, source_id: str) -> list[str]:
    """Ids of the pending or running jobs a trigger started (oldest first)."""
    rows, _ = await store.list_jobs(JobFilter(workspace=workspace, task_name=task,
                                              status=ACTIVE, limit=1000))
    return [r.job_id for r in reversed(rows) if r.source_id == source_id]
