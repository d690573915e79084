"""Commands: what the orchestrator asks of a job (DESIGN §4).

A command is a frozen value; `engine.core.decide.decide` turns it into the events it
causes, or a domain error. Commands about one step attempt carry the attempt they are
about, so a late report of an older attempt is refused instead of applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """The job starts: `JobStarted`, then whatever becomes ready."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A worker takes a ready step (`StepClaimed`); `attempt` must be the ready attempt."""

    step: str
    attempt: int
    worker_id: str
    lease: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkStarted:
    """The step's process started (`StepStarted`). `at`: when it started, if earlier than
    the command is decided (the executor writes a start with the job's next append); the
    event takes it, but never earlier than the job's last event."""

    step: str
    attempt: int
    worker_id: str
    pid: int | None = None
    at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordOutput:
    """A running step reported (partial) output (`StepOutput`)."""

    step: str
    attempt: int
    output: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class Complete:
    """A running step finished successfully (`StepCompleted`)."""

    step: str
    attempt: int
    output: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail:
    """A step attempt failed (`StepFailed`, plus `StepRetryScheduled` if attempts remain).

    `kind` is one of `error`, `timeout`, `worker_lost`, `render`, `rejected`.
    """

    step: str
    attempt: int
    error: str
    exit_code: int | None = None
    kind: str = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspend:
    """An approval step waits for a decision (`StepSuspended`)."""

    step: str
    attempt: int
    message: str | None = None
    timeout_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Approve:
    """A suspended step is approved (`StepApproved`)."""

    step: str
    by: str | None = None
    input: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """A suspended step is rejected (`StepRejected`: failed, never retried)."""

    step: str
    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """Cancel the job: steps that are not running are cancelled now; running ones are
    cancelled when the executor reports that it killed them (`CancelStep`)."""

    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause:
    """An operator pauses the job (`JobPaused`): running steps finish, no step is made
    ready or claimed until `Resume`. Pausing a paused job changes nothing."""

    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    """An operator resumes a paused job (`JobResumed`); a running job is left as it is."""

    by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelStep:
    """A step was killed because of a cancel (`StepCancelled`)."""

    step: str
    attempt: int
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StartChild:
    """A running `task` step started its child job (`ChildJobStarted`)."""

    step: str
    attempt: int
    child_job_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveState:
    """A step printed a `STATE:` line: the task's state for later jobs (`TaskStateSaved`)."""

    step: str
    attempt: int
    state: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordHook:
    """A hook of the job started its own job (`HookFired`); allowed after the job ended,
    and a hook already recorded is not recorded twice."""

    hook: str
    job_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Tick:
    """Time passed: due retries, approval timeouts and the job deadline take effect."""


Command = (
    Start | Claim | MarkStarted | RecordOutput | Complete | Fail | Suspend | Approve | Reject
    | Cancel | CancelStep | StartChild | SaveState | RecordHook | Tick | Pause | Resume
)
