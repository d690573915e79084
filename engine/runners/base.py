"""What a runner is given and what it gives back (DESIGN §6).

A runner executes one attempt of one step. It never raises for a step failure: a failure
is a `RunResult`. Cancelled (`asyncio.CancelledError`), it kills everything it started
(the whole process group, SIGTERM then SIGKILL after a short grace) and re-raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

COMPLETED = "completed"
FAILED = "failed"
SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class StepRun:
    """One attempt of one step, fully resolved by the dispatcher.

    `action` is the resolved action spec with `script`/`cmd` already rendered (and
    shell-quoted); `env` holds the `PARTITUR_*` variables and the action's env, and is
    merged over `os.environ` by the runner.
    """

    job_id: str
    step: str
    attempt: int
    action_type: str
    action: Mapping[str, Any]
    input: Mapping[str, Any]
    workdir: Path
    artifacts_dir: Path
    env: Mapping[str, str]
    timeout: float | None


class LogSink(Protocol):
    """Where a runner sends each line of output, as soon as it has it."""

    def line(self, stream: str, text: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RunResult:
    """How an attempt ended. `kind` is `error` or `timeout` for a failure."""

    status: str
    output: Any = None
    error: str | None = None
    exit_code: int | None = None
    kind: str = "error"
    state: Any = None
    message: str | None = None


class Runner(Protocol):
    """Runs one step attempt; reports the pid of its process (or None) via `on_start`."""

    async def run(
        self, run: StepRun, log: LogSink, on_start: Callable[[int | None], None]
    ) -> RunResult: ...
