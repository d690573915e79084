"""Shared helpers of the browser tests: the demo workspace, finished-job records and
workspace folders written from YAML text."""

from __future__ import annotations

import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from engine.core.projections import JobRow, StepRow
from engine.core.state import JobState
from engine.logs.model import LogLine

ROOT = Path(__file__).resolve().parents[2]
DEMO_WORKSPACE = ROOT / "workspaces" / "browser-demo"


@dataclass
class JobRun:
    """A finished job: its state, log lines, projection rows and artifacts folder."""

    state: JobState
    logs: list[LogLine]
    row: JobRow
    steps: list[StepRow]
    artifacts: Path

    def lines(self, step: str | None = None) -> list[str]:
        return [entry.line for entry in self.logs if step is None or entry.step == step]

    def step_dir(self, step: str) -> Path:
        return self.artifacts / step


RunJob = Callable[..., Awaitable[JobRun]]


def write_workspace(folder: Path, text: str) -> Path:
    """A workspace folder holding `.workflows/main.yaml` with `text`."""
    (folder / ".workflows").mkdir(parents=True, exist_ok=True)
    (folder / ".workflows" / "main.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return folder
