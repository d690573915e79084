"""Runners: how each action type executes one step attempt (DESIGN §6).

`get_runner(action_type)` returns the registered runner; `register_runner` adds one.
"""

from __future__ import annotations

from engine.errors import NotFound
from engine.runners.base import LogSink, Runner, RunResult, StepRun
from engine.runners.browser import BrowserRunner, default_runner
from engine.runners.http import HttpRunner
from engine.runners.python import PythonRunner
from engine.runners.shell import ShellRunner

__all__ = [
    "RUNNERS",
    "BrowserRunner",
    "HttpRunner",
    "LogSink",
    "PythonRunner",
    "RunResult",
    "Runner",
    "ShellRunner",
    "StepRun",
    "get_runner",
    "register_runner",
]

_shell = ShellRunner()
RUNNERS: dict[str, Runner] = {
    "shell": _shell,
    "script": _shell,
    "http": HttpRunner(),
    "python": PythonRunner(),
    "browser": default_runner(),
}


def register_runner(action_type: str, runner: Runner) -> None:
    """Make `runner` run actions of `action_type`."""
    RUNNERS[action_type] = runner


def get_runner(action_type: str) -> Runner:
    """The runner for `action_type`; `NotFound` if there is none."""
    try:
        return RUNNERS[action_type]
    except KeyError:
        raise NotFound(f"no runner for action type {action_type!r}") from None
