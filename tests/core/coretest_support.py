"""Helpers for the core tests: plans, job streams, and a renderer over plain values.

`PlainRenderer` is a test double of the injected rendering function: plan values are
plain Python data, and a string `"$a.b.c"` is a reference looked up in the context
(`input`, `steps`, `each`); anything it cannot find raises `RenderError` like the real
renderer does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.decide import Env, decide_state
from engine.core.plan import Plan, PlanStep, Retry
from engine.core.state import JobState, evolve, fold
from engine.errors import RenderError

FALSY_STRINGS = {"false", "0", "no", "null", "none", ""}


def step(
    name: str,
    *,
    depends_on: Iterable[str] = (),
    when: Any = None,
    for_each: Any = None,
    sequential: bool = False,
    continue_on_failure: bool = False,
    max_attempts: int = 1,
    input: Mapping[str, Any] | None = None,
    retry: Retry | None = None,
    action_type: str = "shell",
) -> PlanStep:
    """A plan step with a placeholder shell action."""
    return PlanStep(
        name=name, action_name=name, action_type=action_type, action={"script": "true"},
        input=dict(input or {}), depends_on=tuple(depends_on), when=when, for_each=for_each,
        sequential=sequential, continue_on_failure=continue_on_failure,
        retry=retry or Retry(max_attempts=max_attempts),
    )


def created(
    *steps: PlanStep,
    ts: float = 0.0,
    timeout: float | None = None,
    input: Mapping[str, Any] | None = None,
    job_id: str = "job-1",
) -> ev.JobCreated:
    plan = Plan(task="t", steps={s.name: s for s in steps})
    return ev.JobCreated(
        ts=ts, job_id=job_id, workspace="default", revision="r1", task="t",
        input=dict(input or {}), plan=plan.to_dict(), timeout=timeout,
    )


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in FALSY_STRINGS
    return bool(value)


@dataclass
class PlainRenderer:
    """Renders plan values over plain Python data; records which steps it rendered."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def _context(self, state: JobState, name: str) -> dict[str, Any]:
        steps = {
            s.name: {"output": s.output, "status": s.status.value, "error": s.error}
            for s in state.steps.values()
            if s.loop_of is None
        }
        context: dict[str, Any] = {"input": dict(state.input), "steps": steps}
        current = state.steps[name]
        if current.loop_of is not None:
            loop = state.steps[current.loop_of]
            context["each"] = {"item": current.item, "index": current.loop_index,
                               "total": len(loop.items or ())}
        return context

    def _render(self, value: Any, context: Mapping[str, Any], where: str) -> Any:
        if isinstance(value, str) and value.startswith("$"):
            found: Any = context
            for part in value[1:].split("."):
                if not isinstance(found, Mapping) or part not in found:
                    raise RenderError(f"{part!r} is undefined", where=where, name=part)
                found = found[part]
            return found
        if isinstance(value, Mapping):
            return {k: self._render(v, context, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [self._render(v, context, where) for v in value]
        return value

    def when(self, state: JobState, step: str) -> tuple[bool, Any]:
        self.calls.append(("when", step))
        value = self._render(state.plan_step(step).when, self._context(state, step),
                             f"step {step}, when")
        return _truthy(value), value

    def for_each(self, state: JobState, step: str) -> list[Any]:
        self.calls.append(("for_each", step))
        value = self._render(state.plan_step(step).for_each, self._context(state, step),
                             f"step {step}, for_each")
        if not isinstance(value, list):
            raise RenderError(f"for_each must be a list, not {type(value).__name__}",
                              where=f"step {step}, for_each")
        return value

    def input(self, state: JobState, step: str) -> dict[str, Any]:
        self.calls.append(("input", step))
        rendered = self._render(dict(state.plan_step(step).input), self._context(state, step),
                                f"step {step}, input")
        assert isinstance(rendered, dict)
        return rendered


class Job:
    """A job driven through `decide`, keeping its events and its evolved state."""

    def __init__(self, *steps: PlanStep, env: Env | None = None, now: float = 0.0,
                 timeout: float | None = None, input: Mapping[str, Any] | None = None,
                 start: bool = True) -> None:
        self.env = env or Env(renderer=PlainRenderer())
        self.now = now
        self.events: list[ev.Event] = [created(*steps, ts=now, timeout=timeout, input=input)]
        self.state = fold(self.events)
        if start:
            self.do(cmd.Start())

    def do(self, command: cmd.Command, now: float | None = None) -> list[ev.Event]:
        """Decide `command` at `now` (default: the job's clock), apply and keep the events."""
        if now is not None:
            self.now = now
        events, decided = decide_state(self.state, command, self.now, self.env)
        for event in events:
            self.state = evolve(self.state, event)
        # The orchestrator keeps the state deciding computed instead of folding again.
        assert decided == self.state, "decide_state's state is not the fold of its events"
        self.events.extend(events)
        return events

    def run(self, name: str, output: Any = None, now: float | None = None) -> list[ev.Event]:
        """Claim a ready step and complete it."""
        attempt = self.state.steps[name].attempt
        self.do(cmd.Claim(step=name, attempt=attempt, worker_id="w1", lease="l"), now)
        return self.do(cmd.Complete(step=name, attempt=attempt, output=output))

    def fail(self, name: str, error: str = "boom", kind: str = "error",
             now: float | None = None) -> list[ev.Event]:
        """Claim a ready step (if it is ready) and fail it."""
        current = self.state.steps[name]
        if current.status.value == "ready":
            self.do(cmd.Claim(step=name, attempt=current.attempt, worker_id="w1", lease="l"), now)
        return self.do(cmd.Fail(step=name, attempt=current.attempt, error=error, kind=kind))

    def status(self, name: str) -> str:
        return self.state.steps[name].status.value

    def statuses(self) -> dict[str, str]:
        return {name: s.status.value for name, s in self.state.steps.items()}


def types(events: Iterable[ev.Event]) -> list[str]:
    return [e.type for e in events]
