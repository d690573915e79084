"""Rendering a step's `when`, `for_each` and `input` against a job's state.

`TemplateStepRenderer` is the `StepRenderer` that `engine.core.decide` calls when a step
becomes ready; core stays free of Jinja by depending only on that protocol. The context
is built from the folded `JobState` (DESIGN §3): `input`, `secret`, `steps` and the
underscore shorthand, `each` for loop instances, `job`, and the task `state`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from engine.compiler.templating import build_context, is_truthy, render_value
from engine.core.plan import PlanStep
from engine.core.state import JobState, StepState, StepStatus
from engine.errors import RenderError


class TemplateStepRenderer:
    """Renders step templates with the sandboxed `<< >>` engine.

    `secrets` is the `secret` mapping templates see; `task_state` the task's state object.
    The context of the last state rendered is kept, since deciding one state renders
    many steps against it.
    """

    def __init__(self, secrets: Mapping[str, Any] | None = None, task_state: Any = None):
        self._secrets: Mapping[str, Any] = secrets or {}
        self._task_state = task_state
        self._cached: tuple[JobState, dict[str, Any]] | None = None

    def when(self, state: JobState, step: str) -> tuple[bool, Any]:
        """(truthy?, rendered value) of the step's `when`."""
        value = render_value(
            self._plan_step(state, step).when, self._context(state, step),
            where=_where(state, step, "when"),
        )
        return is_truthy(value), value

    def for_each(self, state: JobState, step: str) -> list[Any]:
        """The items of a loop placeholder's `for_each`, which must render to a list."""
        where = _where(state, step, "for_each")
        value = render_value(self._plan_step(state, step).for_each, self._context(state, step),
                             where=where)
        if isinstance(value, str):
            value = _json_list(value)
        if isinstance(value, list | tuple):
            return list(value)
        raise RenderError(
            f"for_each must render to a list, not {_kind(value)}", where=where
        )

    def input(self, state: JobState, step: str) -> dict[str, Any]:
        """The step's rendered `input` mapping (with `each` for a loop instance)."""
        value = render_value(
            dict(self._plan_step(state, step).input), self._context(state, step),
            where=_where(state, step, "input"),
        )
        return dict(value)

    # --- context -------------------------------------------------------------------

    def _plan_step(self, state: JobState, step: str) -> PlanStep:
        try:
            return state.plan_step(step)
        except KeyError:
            raise RenderError(f"unknown step {step!r}", where=f"task {state.task}") from None

    def _context(self, state: JobState, step: str) -> dict[str, Any]:
        if self._cached is None or self._cached[0] is not state:
            self._cached = (state, self._base_context(state))
        context = self._cached[1]
        current = state.steps.get(step)
        if current is not None and current.loop_of is not None:
            context = dict(context)
            placeholder = state.steps.get(current.loop_of)
            items = placeholder.items if placeholder is not None else None
            context["each"] = {
                "item": current.item,
                "index": current.loop_index,
                "total": len(items) if items is not None else len(state.instances(current.loop_of)),
            }
        return context

    def _base_context(self, state: JobState) -> dict[str, Any]:
        instances: dict[str, list[StepState]] = {}
        for st in state.steps.values():
            if st.loop_of is not None:
                instances.setdefault(st.loop_of, []).append(st)
        steps: dict[str, dict[str, Any]] = {}
        for name, st in state.steps.items():
            if st.loop_of is not None:
                continue
            output = st.output
            if name in instances or st.items is not None:
                ordered = sorted(instances.get(name, []), key=lambda s: s.loop_index or 0)
                output = [_instance_output(s) for s in ordered]
            steps[name] = {"output": output, "status": str(st.status), "error": st.error}
        return build_context(
            input=state.input,
            secret=self._secrets,
            steps=steps,
            job={
                "id": state.job_id,
                "task": state.task,
                "workspace": state.workspace,
                "revision": state.revision,
            },
            state=self._task_state,
        )


def _instance_output(step: StepState) -> Any:
    return step.output if step.status == StepStatus.COMPLETED else None


def _where(state: JobState, step: str, field: str) -> str:
    return f"task {state.task}, step {step}, {field}"


def _json_list(text: str) -> Any:
    """A string that is a JSON array (e.g. a step's printed output) as a list."""
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"the string {value[:60]!r}"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"
