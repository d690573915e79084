"""Rendering a step's `when`, `for_each` and `input` against a job's state.

`TemplateStepRenderer` is the `StepRenderer` that `engine.core.decide` calls when a step
becomes ready; core stays free of Jinja by depending only on that protocol. The context
is built from the folded `JobState` (DESIGN §3): `input`, `secret`, `steps` and the
underscore shorthand, `each` for loop instances, `job`, and the task `state`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from engine.compiler.templating import RESERVED_NAMES, is_truthy, render_value
from engine.core.plan import Plan, PlanStep
from engine.core.state import JobState, StepState, StepStatus, instance_name
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
        self._cached: tuple[JobState, StateContext] | None = None

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

    def _context(self, state: JobState, step: str) -> Mapping[str, Any]:
        if self._cached is None or self._cached[0] is not state:
            self._cached = (state, self._base_context(state))
        context = self._cached[1]
        current = state.steps.get(step)
        if current is not None and current.loop_of is not None:
            placeholder = state.steps.get(current.loop_of)
            items = placeholder.items if placeholder is not None else None
            each = {
                "item": current.item,
                "index": current.loop_index,
                "total": len(items) if items is not None else len(state.instances(current.loop_of)),
            }
            context = context.adding("each", each)
        return context

    def _base_context(self, state: JobState) -> StateContext:
        steps = StepViews(state)
        return StateContext(steps, {
            "input": state.input,
            "secret": self._secrets,
            "steps": steps,
            "state": self._task_state,
            "job": {
                "id": state.job_id,
                "task": state.task,
                "workspace": state.workspace,
                "revision": state.revision,
            },
        })


class StateContext(Mapping[str, Any]):
    """The names a template sees, as `templating.build_context` lays them out: each step
    under its name (hyphens as underscores, unless that shadows a reserved name or a
    step literally so named), then `input`, `secret`, `steps`, `state`, `job`.

    Names are resolved when a template reads them, so a decision costs the same for a
    plan of ten steps as for one of a thousand: nothing is built for a step whose input
    holds no template, and a template reads only the steps it names.
    """

    __slots__ = ("_aliases", "_fixed", "_steps")

    def __init__(self, steps: StepViews, fixed: Mapping[str, Any]) -> None:
        self._steps = steps
        self._aliases = step_aliases(steps.plan)
        self._fixed = fixed

    def adding(self, key: str, value: Any) -> StateContext:
        """This context with one more fixed name (`each` for a loop instance)."""
        return StateContext(self._steps, {**self._fixed, key: value})

    def __getitem__(self, key: str) -> Any:
        if key in self._fixed:
            return self._fixed[key]
        return self._steps[self._aliases[key]]

    def __contains__(self, key: object) -> bool:
        return key in self._fixed or key in self._aliases

    def __iter__(self) -> Iterator[str]:
        yield from (k for k in self._aliases if k not in self._fixed)
        yield from self._fixed

    def __len__(self) -> int:
        return sum(1 for _ in self)


# plan id → (plan, {template name: step name}); plans are immutable.
_ALIASES: dict[int, tuple[Plan, dict[str, str]]] = {}


def step_aliases(plan: Plan) -> dict[str, str]:
    """The names steps are reachable by in a template (as `build_context` assigns them),
    computed once per plan object."""
    cached = _ALIASES.get(id(plan))
    if cached is not None and cached[0] is plan:
        return cached[1]
    aliases: dict[str, str] = {}
    for name in plan.steps:
        key = name.replace("-", "_")
        if key in RESERVED_NAMES or (key in aliases and key != name):
            continue
        aliases[key] = name
    if len(_ALIASES) > 4096:
        _ALIASES.clear()
    _ALIASES[id(plan)] = (plan, aliases)
    return aliases


class StepViews(Mapping[str, Mapping[str, Any]]):
    """`steps` in a template: name → `{output, status, error}`, computed on first use.

    A job with a large loop has many steps; building every view for every render would
    make each decision cost the size of the job, so views are made only when a template
    reads them. A loop placeholder's output is the list of its instances' outputs.
    """

    __slots__ = ("_state", "_views")

    def __init__(self, state: JobState) -> None:
        self._state = state
        self._views: dict[str, Mapping[str, Any]] = {}

    @property
    def plan(self) -> Plan:
        return self._state.plan

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        view = self._views.get(name)
        if view is not None:
            return view
        st = self._state.steps.get(name)
        if st is None or st.loop_of is not None:
            raise KeyError(name)
        view = StepView(self._state, st)
        self._views[name] = view
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self._state.plan.steps)

    def __len__(self) -> int:
        return len(self._state.plan.steps)

    def __contains__(self, name: object) -> bool:
        return name in self._state.plan.steps


class StepView(Mapping[str, Any]):
    """One step as templates see it; a loop's list of outputs is built only when read."""

    __slots__ = ("_output", "_state", "_step")
    _KEYS = ("output", "status", "error")

    def __init__(self, state: JobState, step: StepState) -> None:
        self._state = state
        self._step = step
        self._output: list[Any] | None = None

    def __getitem__(self, key: str) -> Any:
        st = self._step
        if key == "status":
            return str(st.status)
        if key == "error":
            return st.error
        if key != "output":
            raise KeyError(key)
        if st.items is None:
            return st.output
        if self._output is None:
            self._output = [
                _instance_output(self._state.steps[instance_name(st.name, i)])
                for i in range(len(st.items))
            ]
        return self._output

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)


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
