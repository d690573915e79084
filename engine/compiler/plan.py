"""Task → Plan: the frozen step DAG one job runs (DESIGN §2).

Compilation is pure: each step's action is resolved (a named action, or the step's inline
action, whose `action_name` is the step name), step-level timeout/retry/tags win over the
action's, steps come in a topological order (YAML order among steps ready at the same
time), and hooks are the task's followed by the workspace's. Templates stay unrendered.
Plans are cached on the (frozen) `LoadedWorkspace` they were compiled from.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from engine.compiler.validate import HOOK_KINDS, LoadedWorkspace
from engine.core.plan import Plan, PlanStep, Retry
from engine.errors import CompileError, Issue, NotFound
from engine.model import ActionSpec, RetryPolicy, StepSpec, TaskSpec


def compile_task(ws: LoadedWorkspace, task_name: str) -> Plan:
    """The plan of task `task_name`; `NotFound` for an unknown task."""
    cached = ws.plans.get(task_name)
    if isinstance(cached, Plan):
        return cached
    task = ws.spec.tasks.get(task_name)
    if task is None:
        raise NotFound(f"task '{task_name}' not found in workspace '{ws.name}'")
    plan = _compile(ws, task_name, task)
    ws.plans[task_name] = plan
    return plan


def _compile(ws: LoadedWorkspace, task_name: str, task: TaskSpec) -> Plan:
    steps: dict[str, PlanStep] = {}
    for name in topological_order(task.flow, task_name):
        step = task.flow[name]
        action_name, action = _resolve_action(ws, task_name, name, step)
        retry_policy = step.retry or action.retry
        steps[name] = PlanStep(
            name=name,
            action_name=action_name,
            action_type=action.type,
            action=action.model_dump(mode="json"),
            input=dict(step.input),
            depends_on=tuple(step.depends_on),
            when=step.when,
            for_each=step.for_each,
            sequential=step.sequential,
            continue_on_failure=step.continue_on_failure,
            timeout=step.timeout if step.timeout is not None else action.timeout,
            retry=to_retry(retry_policy),
            tags=tuple(step.tags or action.tags),
        )
    hooks: dict[str, list[dict[str, object]]] = {}
    for kind in HOOK_KINDS:
        specs = [*getattr(task, kind), *getattr(ws.spec, kind)]
        if specs:
            hooks[kind] = [h.model_dump(mode="json") for h in specs]
    return Plan(
        task=task_name,
        steps=steps,
        timeout=task.timeout,
        retry=to_retry(task.retry),
        hooks=hooks,
    )


def _resolve_action(
    ws: LoadedWorkspace, task_name: str, step_name: str, step: StepSpec
) -> tuple[str, ActionSpec]:
    if step.inline is not None:
        return step_name, step.inline
    action = ws.spec.actions.get(step.action or "")
    if action is None:
        path = f"tasks.{task_name}.flow.{step_name}.action"
        raise CompileError(issues=[Issue(message=f"unknown action '{step.action}'", path=path)])
    return str(step.action), action


def to_retry(policy: RetryPolicy | None) -> Retry:
    """The plan's plain-number form of a retry policy (one attempt when there is none)."""
    if policy is None:
        return Retry()
    return Retry(
        max_attempts=policy.max_attempts,
        delay=policy.delay,
        backoff=policy.backoff,
        max_delay=policy.max_delay,
        jitter=policy.jitter,
        on_lost=policy.on_lost,
    )


def topological_order(flow: Mapping[str, StepSpec], task_name: str = "") -> list[str]:
    """Step names so that each comes after its dependencies; among the steps that are
    ready at the same time, YAML order. Raises `CompileError` on a cycle."""
    position = {name: index for index, name in enumerate(flow)}
    waiting = {name: len(set(step.depends_on)) for name, step in flow.items()}
    dependents: dict[str, list[str]] = {name: [] for name in flow}
    for name, step in flow.items():
        for dep in set(step.depends_on):
            if dep not in flow:
                path = f"tasks.{task_name}.flow.{name}.depends_on"
                raise CompileError(issues=[Issue(message=f"unknown step '{dep}'", path=path)])
            dependents[dep].append(name)
    ready = [position[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    names = list(flow)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for child in dependents[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, position[child])
    if len(order) != len(flow):
        stuck = ", ".join(n for n in flow if n not in set(order))
        raise CompileError(issues=[Issue(message=f"dependency cycle among: {stuck}",
                                         path=f"tasks.{task_name}.flow")])
    return order
