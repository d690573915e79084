"""Dry runs: what a job of a task would do with an input, without running anything.

`dry_run` validates the input with the real `coerce_input`, compiles the plan with the
real `compile_task`, and renders — with the real `TemplateStepRenderer` — every `when`,
`for_each` and step `input` that does not refer to another step's output. The result
says, per step, whether it would run, be skipped or be expanded (and into what), or
that this is only known at run time because it needs the outputs of earlier steps.
Nothing is executed and no event is written. Secret values are masked in the result,
as in every API response.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.compiler.inputs import coerce_input, secret_paths
from engine.compiler.plan import compile_task
from engine.compiler.step_render import TemplateStepRenderer
from engine.compiler.templating import referenced_steps
from engine.core import events as ev
from engine.core.plan import Plan, PlanStep
from engine.core.state import JobState, evolve, instance_name
from engine.errors import NotFound, RenderError
from engine.logs.redact import Redactor
from engine.workspaces import Workspace

MASK = "••••••"
DRY_RUN_JOB_ID = "dry-run"
MAX_SHOWN_INSTANCES = 100
MAX_LOOP_ITEMS = 10_000

RUN, SKIP, EXPAND, FAIL, AT_RUN_TIME = "run", "skip", "expand", "fail", "at_run_time"


@dataclass(frozen=True, slots=True)
class StepPlan:
    """What one step would do: `action` is run, skip, expand, fail or at_run_time."""

    step: str
    action: str
    action_type: str
    depends_on: tuple[str, ...]
    reason: str | None = None
    when: Any = None
    input: Any = None
    input_needs: tuple[str, ...] = ()
    items: list[Any] | None = None
    instances: list[dict[str, Any]] = field(default_factory=list)
    needs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "step": self.step, "action": self.action, "action_type": self.action_type,
            "depends_on": list(self.depends_on), "reason": self.reason,
        }
        if self.when is not None:
            data["when"] = self.when
        if self.input_needs:
            data["input"] = None
            data["input_needs"] = list(self.input_needs)
        else:
            data["input"] = self.input
        if self.items is not None:
            data["items"] = self.items
            data["instances"] = self.instances
        if self.needs:
            data["needs"] = list(self.needs)
        return data


@dataclass(frozen=True, slots=True)
class DryRun:
    """The plan of a job that was not created."""

    workspace: str
    task: str
    revision: str
    input: Mapping[str, Any]
    steps: tuple[StepPlan, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "task": self.task, "revision": self.revision,
                "input": dict(self.input), "steps": [s.to_dict() for s in self.steps]}


def dry_run(
    ws: Workspace, task: str, raw_input: Mapping[str, Any] | None, *, now: float,
    task_state: Any = None,
) -> DryRun:
    """The plan of a job of `task` with `raw_input`; raises `InputInvalid` (every bad
    field), `NotFound` or `WorkspaceInvalid` exactly as creating the job would."""
    loaded = ws.require()
    spec = loaded.spec.tasks.get(task)
    if spec is None:
        raise NotFound(f"task {task!r} not found in workspace {ws.name!r}")
    plan = compile_task(loaded, task)
    job_input = coerce_input(spec.input, raw_input or {}, secrets=ws.secrets,
                             connections=ws.connections,
                             connection_types=loaded.spec.connection_types)
    secret_fields = secret_paths(spec.input)
    state = evolve(None, ev.JobCreated(
        ts=now, job_id=DRY_RUN_JOB_ID, workspace=ws.name, revision=loaded.revision, task=task,
        input=job_input, plan=plan.to_dict(), secret_paths=secret_fields))
    renderer = TemplateStepRenderer({name: MASK for name in ws.secrets}, task_state=task_state)
    decided: dict[str, StepPlan] = {}
    for name, plan_step in plan.steps.items():
        decided[name] = _step_plan(state, plan, plan_step, renderer, decided, now)
    redactor = Redactor([*ws.secret_values, *_secret_inputs(job_input, secret_fields)])
    shown_input = {k: (MASK if k in secret_fields and v not in (None, "") else v)
                   for k, v in job_input.items()}
    steps = tuple(_redacted(redactor, s) for s in decided.values())
    return DryRun(ws.name, task, loaded.revision, shown_input, steps)


def _needs(plan: Plan, value: Any) -> tuple[str, ...]:
    """The steps whose outputs the templates in `value` refer to."""
    if value is None:
        return ()
    by_alias = {n.replace("-", "_"): n for n in plan.steps}
    refs = referenced_steps(value)
    return tuple(sorted({by_alias.get(ref, ref) for ref in refs}))


def _step_plan(
    state: JobState, plan: Plan, step: PlanStep, renderer: TemplateStepRenderer,
    decided: Mapping[str, StepPlan], now: float,
) -> StepPlan:
    name = step.name
    base: dict[str, Any] = {"step": name, "action_type": step.action_type,
                            "depends_on": step.depends_on}
    deps = [decided[d] for d in step.depends_on if d in decided]
    if deps and all(d.action == SKIP for d in deps):
        return StepPlan(action=SKIP, reason="all dependencies would be skipped", **base)
    when_value: Any = None
    if step.when is not None:
        needs = _needs(plan, step.when)
        if needs:
            return StepPlan(action=AT_RUN_TIME, needs=needs,
                            reason="its when needs the outputs of " + ", ".join(needs), **base)
        try:
            truthy, when_value = renderer.when(state, name)
        except RenderError as exc:
            return StepPlan(action=FAIL, reason=f"when does not render: {exc}", **base)
        if not truthy:
            return StepPlan(action=SKIP, when=when_value,
                            reason=f"when was false (rendered: {when_value!r})", **base)
    if step.for_each is not None:
        return _loop(state, plan, step, renderer, when_value, now, base)
    input_needs = _needs(plan, dict(step.input))
    if input_needs:
        return StepPlan(action=RUN, when=when_value, input_needs=input_needs, **base)
    try:
        rendered = renderer.input(state, name)
    except RenderError as exc:
        return StepPlan(action=FAIL, when=when_value,
                        reason=f"input does not render: {exc}", **base)
    return StepPlan(action=RUN, when=when_value, input=rendered, **base)


def _loop(
    state: JobState, plan: Plan, step: PlanStep, renderer: TemplateStepRenderer,
    when_value: Any, now: float, base: dict[str, Any],
) -> StepPlan:
    name = step.name
    needs = _needs(plan, step.for_each)
    if needs:
        return StepPlan(action=AT_RUN_TIME, when=when_value, needs=needs,
                        reason="its for_each needs the outputs of " + ", ".join(needs), **base)
    try:
        items = renderer.for_each(state, name)
    except RenderError as exc:
        return StepPlan(action=FAIL, when=when_value,
                        reason=f"for_each does not render: {exc}", **base)
    if not items:
        return StepPlan(action=SKIP, when=when_value, items=[], reason="for_each is empty",
                        **base)
    if len(items) > MAX_LOOP_ITEMS:
        return StepPlan(action=FAIL, when=when_value,
                        reason=f"for_each yields {len(items)} items; the limit is "
                               f"{MAX_LOOP_ITEMS}", **base)
    input_needs = _needs(plan, dict(step.input))
    expanded = evolve(state, ev.LoopExpanded(ts=now, step=name, items=tuple(items)))
    instances: list[dict[str, Any]] = []
    for index, item in enumerate(items[:MAX_SHOWN_INSTANCES]):
        instance = instance_name(name, index)
        entry: dict[str, Any] = {"step": instance, "item": item}
        if input_needs:
            entry["input"] = None
        else:
            try:
                entry["input"] = renderer.input(expanded, instance)
            except RenderError as exc:
                entry["input"] = None
                entry["error"] = str(exc)
        instances.append(entry)
    reason = f"{len(items)} instances" + (
        f" ({MAX_SHOWN_INSTANCES} shown)" if len(items) > MAX_SHOWN_INSTANCES else "")
    return StepPlan(action=EXPAND, when=when_value, items=list(items), instances=instances,
                    input_needs=input_needs, reason=reason, **base)


def _secret_inputs(job_input: Mapping[str, Any], fields: tuple[str, ...]) -> list[str]:
    values: list[str] = []
    for name in fields:
        value = job_input.get(name)
        if isinstance(value, Mapping):
            values.extend(str(v) for v in value.values() if v not in (None, ""))
        elif value not in (None, ""):
            values.append(str(value))
    return values


def _redact(redactor: Redactor, value: Any) -> Any:
    if isinstance(value, str):
        return redactor.redact(value)
    if isinstance(value, Mapping):
        return {k: _redact(redactor, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(redactor, v) for v in value]
    return value


def _redacted(redactor: Redactor, plan: StepPlan) -> StepPlan:
    if not redactor:
        return plan
    return StepPlan(
        step=plan.step, action=plan.action, action_type=plan.action_type,
        depends_on=plan.depends_on, reason=_redact(redactor, plan.reason),
        when=_redact(redactor, plan.when), input=_redact(redactor, plan.input),
        input_needs=plan.input_needs,
        items=None if plan.items is None else _redact(redactor, plan.items),
        instances=_redact(redactor, plan.instances), needs=plan.needs,
    )
