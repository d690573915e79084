"""Frozen pydantic models of the workspace YAML (DESIGN §2).

These models describe what a user may write; they do no file I/O. The loader
(`engine.compiler.loader`) reads files and records where each node came from, and the
validator (`engine.compiler.validate`) maps pydantic errors back onto file:line:column.
Cross-references (actions named by steps, dependency cycles, templates) are checked by
the validator, not here.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float | None:
    """`30`, `30s`, `500ms`, `5m`, `2h`, `1d` → seconds as a float."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30s'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"invalid duration {value!r}: use seconds or a string like '30s', '5m', '2h'")


Duration = Annotated[float, BeforeValidator(parse_duration)]
OptDuration = Annotated[float | None, BeforeValidator(parse_duration)]


class Frozen(BaseModel):
    """Base of every YAML model: immutable, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


ActionType = Literal["shell", "http", "python", "browser", "task", "approval"]
ACTION_TYPES: tuple[str, ...] = ("shell", "script", "http", "python", "browser", "task", "approval")
SCALAR_INPUT_TYPES: tuple[str, ...] = (
    "string", "text", "integer", "number", "boolean", "date", "datetime", "object", "array",
)


class InputField(Frozen):
    """One field of an input schema (task input, action input, connection type property)."""

    type: str = "string"
    required: bool = False
    default: Any = None
    options: list[Any] | None = None
    multiple: bool = False
    secret: bool = False
    description: str | None = None
    label: str | None = None
    pattern: str | None = None
    min: float | None = None
    max: float | None = None


InputSchema = dict[str, InputField]


class RetryPolicy(Frozen):
    """How often and how soon a failed step (or task) is tried again.

    `max_attempts` counts every attempt: 3 means the first try plus two retries.
    `jitter` is a fraction (0–1) of the delay added at random. `on_lost` re-runs a step
    whose worker was lost (off by default: at most once per attempt).
    """

    max_attempts: int = Field(default=1, ge=1, le=100)
    delay: Duration = 0.0
    backoff: Literal["fixed", "exponential"] = "fixed"
    max_delay: OptDuration = None
    jitter: float = Field(default=0.0, ge=0.0, le=1.0)
    on_lost: bool = False

    @model_validator(mode="before")
    @classmethod
    def _int_shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"max_attempts": value}
        return value


class BrowserLaunch(Frozen):
    """Launch options of a browser action."""

    headless: bool = True
    viewport: dict[str, int] | None = None
    start_url: str | None = None
    user_agent: str | None = None
    timeout: OptDuration = None


class BrowserProfile(Frozen):
    """A named browser profile (cookies and local storage) a browser action loads.

    With `persist: true` the step saves the profile back when it succeeds.
    """

    name: str = Field(min_length=1)  # may be a template; checked when the step runs
    persist: bool = False


class ActionSpec(Frozen):
    """An action: what one step does. Named under `actions:` or inline in a step.

    The type-specific fields are flat, as in Strøm; `type: script` is an alias of `shell`.
    """

    type: ActionType = "shell"
    description: str | None = None
    input: InputSchema = Field(default_factory=dict)
    output: InputSchema | None = None
    env: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    timeout: OptDuration = None
    retry: RetryPolicy | None = None
    # shell / python
    script: str | None = None
    cmd: str | None = None
    interpreter: str | None = None
    file: str | None = None
    # http
    url: str | None = None
    method: str = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Any] = Field(default_factory=dict)
    body: Any = None
    form: dict[str, Any] | None = None
    accept_status: list[int] = Field(default_factory=list)
    # browser
    steps: list[dict[str, Any]] | None = None
    launch: BrowserLaunch | None = None
    profile: BrowserProfile | None = None
    # task (sub-job)
    task: str | None = None
    # approval
    message: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _alias_script_type(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") == "script":
            value = {**value, "type": "shell"}
        return value

    @model_validator(mode="after")
    def _type_fields(self) -> ActionSpec:
        needs = {
            "shell": ("script", "cmd"),
            "python": ("script", "file"),
            "http": ("url",),
            "browser": ("script", "steps"),
            "task": ("task",),
        }.get(self.type)
        if needs and not any(getattr(self, name) for name in needs):
            wanted = " or ".join(f"'{n}'" for n in needs)
            raise ValueError(f"a {self.type} action needs {wanted}")
        if self.type == "shell" and self.script and self.cmd:
            raise ValueError("a shell action takes 'script' or 'cmd', not both")
        return self


ACTION_FIELDS: frozenset[str] = frozenset(ActionSpec.model_fields) - {
    "input", "retry", "timeout", "tags", "description",
}


class HookSpec(Frozen):
    """A hook: an action run as its own job when a job ends (`on_success` …)."""

    action: str | None = None
    task: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_target(self) -> HookSpec:
        if (self.action is None) == (self.task is None):
            raise ValueError("a hook names exactly one of 'action' or 'task'")
        return self


class ConcurrencySpec(Frozen):
    """At most `limit` running jobs (per rendered `key` when given)."""

    limit: int = Field(ge=1)
    key: str | None = None
    policy: Literal["queue", "skip", "cancel_previous"] = "queue"

    @model_validator(mode="before")
    @classmethod
    def _int_shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"limit": value}
        return value


class RateLimitSpec(Frozen):
    """At most `limit` starts per `per` of the steps whose rendered `key` is the same
    (the step's own limit without a key); see `engine.ratelimit`."""

    key: str | None = None
    per: Duration = 60.0
    limit: int = Field(ge=1)

    @model_validator(mode="after")
    def _positive_window(self) -> RateLimitSpec:
        if self.per <= 0:
            raise ValueError("rate_limit.per must be longer than 0 seconds")
        return self


class StepSpec(Frozen):
    """One node of a task's flow.

    A step names an `action`, or carries an inline action under `action` (a mapping) or
    directly in its own keys (`type`, `script`, …): the loader folds those into `inline`.
    """

    action: str | None = None
    inline: ActionSpec | None = None
    description: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    when: Any = None
    for_each: Any = None
    sequential: bool = False
    continue_on_failure: bool = False
    timeout: OptDuration = None
    retry: RetryPolicy | None = None
    tags: list[str] = Field(default_factory=list)
    rate_limit: RateLimitSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _fold_inline(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        value = dict(value)
        if isinstance(value.get("action"), dict):
            value["inline"] = value.pop("action")
        inline = {k: value.pop(k) for k in list(value) if k in ACTION_FIELDS}
        if inline:
            if "inline" in value:
                raise ValueError("a step has an inline action twice")
            value["inline"] = inline
        if isinstance(value.get("depends_on"), str):
            value["depends_on"] = [value["depends_on"]]
        return value

    @model_validator(mode="after")
    def _one_action(self) -> StepSpec:
        if (self.action is None) == (self.inline is None):
            raise ValueError(
                "a step needs either 'action: <name>' or an inline action ('type', 'script', …)"
            )
        return self


class TaskSpec(Frozen):
    """A task: an input schema and a flow of steps (a DAG)."""

    description: str | None = None
    folder: str | None = None
    mode: str = "distributed"
    input: InputSchema = Field(default_factory=dict)
    flow: dict[str, StepSpec]
    timeout: OptDuration = None
    retry: RetryPolicy | None = None
    concurrency: ConcurrencySpec | None = None
    priority: int = Field(default=3, ge=1, le=5)
    on_success: list[HookSpec] = Field(default_factory=list)
    on_error: list[HookSpec] = Field(default_factory=list)
    on_cancel: list[HookSpec] = Field(default_factory=list)
    on_suspended: list[HookSpec] = Field(default_factory=list)


class EventSource(Frozen):
    """What an event trigger listens for: the end of another task's jobs."""

    task: str
    status: list[Literal["completed", "failed", "cancelled"]] = Field(
        default_factory=lambda: ["completed"]  # type: ignore[arg-type]
    )


class TriggerSpec(Frozen):
    """A trigger: a cron schedule, an inbound webhook, or another task's completion."""

    type: Literal["scheduler", "webhook", "event"]
    task: str
    enabled: bool = True
    input: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    priority: int | None = Field(default=None, ge=1, le=5)
    # scheduler
    cron: str | None = None
    timezone: str = "UTC"
    concurrency: Literal["allow", "skip", "cancel_previous"] = "allow"
    misfire: Literal["skip", "run_once"] = "run_once"
    # webhook
    name: str | None = None
    secret: str | None = None
    mode: Literal["async", "sync"] = "async"
    timeout_secs: float = Field(default=30.0, gt=0)
    allow_query_secret: bool = False
    # event
    on: EventSource | None = None

    @model_validator(mode="after")
    def _type_fields(self) -> TriggerSpec:
        if self.type == "scheduler" and not self.cron:
            raise ValueError("a scheduler trigger needs 'cron'")
        if self.type == "event" and self.on is None:
            raise ValueError("an event trigger needs 'on: {task: …}'")
        return self


class ConnectionSpec(Frozen):
    """A named connection: a `type` (from `connection_types`) and its properties."""

    model_config = ConfigDict(frozen=True, extra="allow")

    type: str


class WorkspaceSpec(Frozen):
    """Everything under a workspace's `.workflows/`, merged across files."""

    actions: dict[str, ActionSpec] = Field(default_factory=dict)
    tasks: dict[str, TaskSpec] = Field(default_factory=dict)
    triggers: dict[str, TriggerSpec] = Field(default_factory=dict)
    secrets: dict[str, Any] = Field(default_factory=dict)
    connection_types: dict[str, InputSchema] = Field(default_factory=dict)
    connections: dict[str, ConnectionSpec] = Field(default_factory=dict)
    on_success: list[HookSpec] = Field(default_factory=list)
    on_error: list[HookSpec] = Field(default_factory=list)
    on_cancel: list[HookSpec] = Field(default_factory=list)
    on_suspended: list[HookSpec] = Field(default_factory=list)


TOP_LEVEL_KEYS: tuple[str, ...] = tuple(WorkspaceSpec.model_fields)
MERGED_KEYS: tuple[str, ...] = (
    "actions", "tasks", "triggers", "secrets", "connection_types", "connections",
)
