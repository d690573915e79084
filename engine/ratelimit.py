"""Step rate limits: `rate_limit: {key, per, limit}` on a step (issue 13, item 4).

At most `limit` steps with the same rendered `key` start in any `per` seconds (a sliding
window). Without a `key`, the limit is the step's own (`<workspace>/<task>/<step>`); with
one, every step of the workspace whose key renders to the same value shares it, so two
tasks calling one API can share one budget. The key is rendered with the job's `input`
and `job` (`<< input.customer >>`).

A step over its limit is not failed: the dispatcher holds it (no worker slot taken) until
the window allows it, and records until when in `RateLimiter.waiting`, which `explain`
shows as "rate limit until T".

The windows are kept in the store (`engine.store.ratewindows`): on SQLite and PostgreSQL
as rows of recent admissions, so every replica on one database counts in the same window
and a restart keeps it; with the memory store, in this process.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.compiler.templating import build_context, render_value
from engine.errors import PartiturError
from engine.store.ratewindows import MemoryRateWindows, RateWindows

if TYPE_CHECKING:
    from engine.core.state import JobState
    from engine.workspaces import WorkspaceRegistry

_INSTANCE = re.compile(r"\[\d+\]$")


@dataclass(frozen=True, slots=True)
class Limit:
    """A rate limit in plain numbers: `limit` starts per `per` seconds under `key`."""

    key: str
    per: float
    limit: int


class RateLimiter:
    """Sliding windows of recent starts, per rendered key (kept by `windows`)."""

    def __init__(self, windows: RateWindows | None = None) -> None:
        self.windows = windows if windows is not None else MemoryRateWindows()
        self.waiting: dict[tuple[str, str], float] = {}
        """(job id, step) → when its rate limit lets it start (for `explain`)."""

    async def reserve(self, limit: Limit, now: float) -> float | None:
        """Count a start now and return None, or return when one is allowed (no count)."""
        return await self.windows.reserve(limit.key, limit.per, limit.limit, now)

    def until(self, job_id: str) -> dict[str, float]:
        """Per step of a job, when its rate limit lets it start."""
        return {step: t for (job, step), t in self.waiting.items() if job == job_id}


def base_step(step: str) -> str:
    """The plan step a loop instance `name[3]` belongs to."""
    return _INSTANCE.sub("", step)


def limit_of(workspaces: WorkspaceRegistry, state: JobState, step: str) -> Limit | None:
    """The rate limit of a job's step (from the job's workspace revision), or None."""
    try:
        loaded = workspaces.revision(state.workspace, state.revision)
    except PartiturError:
        return None
    task = loaded.spec.tasks.get(state.task)
    spec = task.flow.get(base_step(step)) if task is not None else None
    rate = getattr(spec, "rate_limit", None)
    if rate is None:
        return None
    return Limit(render_key(rate.key, state, base_step(step)), float(rate.per), rate.limit)


def render_key(template: str | None, state: JobState, step: str) -> str:
    """The window a step counts in: its rendered key, or the step itself."""
    own = f"{state.workspace}/{state.task}/{step}"
    if template is None:
        return own
    job: Mapping[str, Any] = {"id": state.job_id, "task": state.task,
                              "workspace": state.workspace}
    try:
        value = render_value(template, build_context(input=state.input, job=job),
                             where=f"step {step}, rate_limit.key")
    except PartiturError:
        value = template
    return f"{state.workspace}/key:{value}"
