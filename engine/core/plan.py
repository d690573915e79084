"""The Plan: the frozen step DAG one job runs.

The compiler (`engine.compiler.plan`) builds a Plan from a task, its actions and the
job input; it is stored inside `JobCreated`, so a job can be replayed and run without
the workspace it came from. Templates stay unrendered here; they are rendered when a
step becomes ready.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_SCALARS = (str, int, float, bool, type(None))


def _copy(value: Any) -> Any:
    """A deep copy of plain data, as `dataclasses.asdict` makes of a field's value."""
    if isinstance(value, _SCALARS):
        return value
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    if type(value) is tuple:
        return tuple(_copy(v) for v in value)
    return copy.deepcopy(value)


@dataclass(frozen=True, slots=True)
class Retry:
    """A retry policy in plain numbers (see `engine.model.RetryPolicy`)."""

    max_attempts: int = 1
    delay: float = 0.0
    backoff: str = "fixed"
    max_delay: float | None = None
    jitter: float = 0.0
    on_lost: bool = False

    def to_dict(self) -> dict[str, Any]:
        """`dataclasses.asdict(self)`, written out (one per step of every new job)."""
        return {"max_attempts": self.max_attempts, "delay": self.delay,
                "backoff": self.backoff, "max_delay": self.max_delay, "jitter": self.jitter,
                "on_lost": self.on_lost}

    def delay_before(self, attempt: int, rand: float) -> float:
        """Seconds to wait before `attempt` (2 = first retry); `rand` is uniform in [0, 1)."""
        base = self.delay
        if self.backoff == "exponential":
            base = self.delay * (2 ** max(0, attempt - 2))
        if self.max_delay is not None:
            base = min(base, self.max_delay)
        return base + base * self.jitter * rand


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One step of a plan, with its action resolved and its templates unrendered.

    `action` is the resolved action as plain data (`ActionSpec.model_dump()`), which the
    runner of `action_type` reads. `action_name` is the named action, or the step name for
    an inline one.
    """

    name: str
    action_name: str
    action_type: str
    action: Mapping[str, Any]
    input: Mapping[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    when: Any = None
    for_each: Any = None
    sequential: bool = False
    continue_on_failure: bool = False
    timeout: float | None = None
    retry: Retry = field(default_factory=Retry)
    tags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        # What `dataclasses.asdict` gives, without its generic (and slow) deep copy.
        return {
            "name": self.name, "action_name": self.action_name,
            "action_type": self.action_type, "action": _copy(self.action),
            "input": _copy(self.input), "depends_on": list(self.depends_on),
            "when": _copy(self.when), "for_each": _copy(self.for_each),
            "sequential": self.sequential, "continue_on_failure": self.continue_on_failure,
            "timeout": self.timeout, "retry": self.retry.to_dict(), "tags": list(self.tags),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanStep:
        values = dict(data)
        values["retry"] = Retry(**values.get("retry") or {})
        values["depends_on"] = tuple(values.get("depends_on") or ())
        values["tags"] = tuple(values.get("tags") or ())
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Plan:
    """A task compiled for one job: steps in a topological order, plus task-level limits.

    `hooks` maps `on_success|on_error|on_cancel|on_suspended` to hook specs as plain data
    (task-level first, then workspace-level).
    """

    task: str
    steps: Mapping[str, PlanStep]
    timeout: float | None = None
    retry: Retry = field(default_factory=Retry)
    hooks: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "steps": {name: step.to_dict() for name, step in self.steps.items()},
            # JSON object key order is not kept by every store (Postgres jsonb sorts keys).
            "order": list(self.steps),
            "timeout": self.timeout,
            "retry": self.retry.to_dict(),
            "hooks": {k: list(v) for k, v in self.hooks.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        steps = data["steps"]
        order = data.get("order") or list(steps)
        return cls(
            task=data["task"],
            steps={name: PlanStep.from_dict(steps[name]) for name in order},
            timeout=data.get("timeout"),
            retry=Retry(**data.get("retry") or {}),
            hooks=dict(data.get("hooks") or {}),
        )

    def leaves(self) -> list[str]:
        """Steps no other step depends on: their outputs make the job output."""
        needed = {dep for step in self.steps.values() for dep in step.depends_on}
        return [name for name in self.steps if name not in needed]


def has_end_duties(hooks: Any, max_attempts: Any, *, failed: bool, task_attempt: Any) -> bool:
    """Whether an ended job has anything left to do: hooks, or, having `failed`, a
    task-level attempt left. The arguments are the stored values of its plan's `hooks`
    and `retry.max_attempts` and of its `task_attempt` (None where absent), so that the
    plan's steps need not be read."""
    if hooks:
        return True
    return failed and (task_attempt or 1) < (max_attempts or 1)


# id of a plan's data → (that data, its Plan). The data is kept, so its id is not reused.
_DECODED: dict[int, tuple[Mapping[str, Any], Plan]] = {}
_DECODED_MAX = 64


def plan_from_data(data: Mapping[str, Any]) -> Plan:
    """`Plan.from_dict(data)`, decoded once per data object (plans are immutable).

    Replay (`engine.store.rebuild`) hands the same mapping for every job whose stored plan
    has the same JSON text, so every job of one task revision shares one Plan."""
    cached = _DECODED.get(id(data))
    if cached is not None and cached[0] is data:
        return cached[1]
    plan = Plan.from_dict(data)
    if len(_DECODED) >= _DECODED_MAX:
        _DECODED.clear()
    _DECODED[id(data)] = (data, plan)
    return plan


@dataclass(frozen=True, slots=True)
class PlanIndex:
    """Lookups over a plan that decisions need often: positions and dependents."""

    position: Mapping[str, int]
    dependents: Mapping[str, tuple[str, ...]]


_INDEXES: dict[int, tuple[Plan, PlanIndex]] = {}


def plan_index(plan: Plan) -> PlanIndex:
    """The index of a plan, computed once per plan object (plans are immutable)."""
    cached = _INDEXES.get(id(plan))
    if cached is not None and cached[0] is plan:
        return cached[1]
    dependents: dict[str, list[str]] = {name: [] for name in plan.steps}
    for name, step in plan.steps.items():
        for dep in step.depends_on:
            dependents.setdefault(dep, []).append(name)
    index = PlanIndex(
        position={name: i for i, name in enumerate(plan.steps)},
        dependents={name: tuple(deps) for name, deps in dependents.items()},
    )
    if len(_INDEXES) > 4096:
        _INDEXES.clear()
    _INDEXES[id(plan)] = (plan, index)
    return index
