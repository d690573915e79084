"""Turning a ready step into a `StepRun`: real input, rendered action body, environment.

Rendering for execution happens here, with the real secret values, at the moment a step
is handed to a runner; what the event log holds is rendered with secrets masked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.compiler.templating import build_context, render_shell, render_text, render_value
from engine.core.state import JobState
from engine.runners.base import StepRun

_ENV_NAME = re.compile(r"[^A-Za-z0-9_]")


def env_name(name: str) -> str:
    """`my-field` → `PARTITUR_INPUT_MY_FIELD`."""
    return "PARTITUR_INPUT_" + _ENV_NAME.sub("_", name).upper()


def env_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), default=str)


def step_input(action: Mapping[str, Any], rendered: Mapping[str, Any]) -> dict[str, Any]:
    """The step's rendered input over the defaults of the action's input schema."""
    merged: dict[str, Any] = {}
    for name, field in (action.get("input") or {}).items():
        if isinstance(field, Mapping) and field.get("default") is not None:
            merged[name] = field["default"]
    merged.update(rendered)
    return merged


def prepare(
    state: JobState,
    step: str,
    *,
    real_input: Mapping[str, Any],
    secrets: Mapping[str, Any],
    workdir: Path,
    artifacts_dir: Path,
) -> StepRun:
    """The `StepRun` of a ready step. Raises `RenderError` when the action body fails."""
    plan_step = state.plan_step(step)
    current = state.steps[step]
    action = dict(plan_step.action)
    inputs = step_input(action, real_input)
    job = {"id": state.job_id, "task": state.task, "workspace": state.workspace,
           "revision": state.revision}
    context = build_context(input=inputs, secret=secrets, job=job)
    where = f"task {state.task}, step {step}"
    for key in ("script", "cmd"):
        if action.get(key) and plan_step.action_type == "shell":
            action[key] = render_shell(action[key], context, where=f"{where}, {key}")
    if plan_step.action_type == "browser":
        # A browser `script` is code that gets its input as data: it is never rendered.
        for key in ("steps", "launch", "profile"):
            if action.get(key) is not None:
                action[key] = render_value(action[key], context, where=f"{where}, {key}")
    for key in ("url", "body", "headers", "query", "form", "message", "task"):
        if action.get(key) is not None:
            action[key] = render_value(action[key], context, where=f"{where}, {key}")
    env = {
        "PARTITUR_JOB_ID": state.job_id,
        "PARTITUR_STEP": step,
        "PARTITUR_ATTEMPT": str(current.attempt),
        "PARTITUR_IDEMPOTENCY_KEY": f"{state.job_id}:{step}",
        "PARTITUR_WORKSPACE": state.workspace,
        "PARTITUR_TASK": state.task,
        "ARTIFACTS_DIR": str(artifacts_dir),
    }
    for name, value in inputs.items():
        env[env_name(name)] = env_value(value)
    for name, value in (action.get("env") or {}).items():
        env[name] = render_text(str(value), context, where=f"{where}, env.{name}")
    return StepRun(
        job_id=state.job_id, step=step, attempt=current.attempt,
        action_type=plan_step.action_type, action=action, input=inputs, workdir=workdir,
        artifacts_dir=artifacts_dir, env=env, timeout=plan_step.timeout,
    )
