"""Recorded action logs → deterministic declarative browser workflows (`workflows/build`).

An action log is JSONL, one user action a line: `{"action", "selector", "value", "url"}`
with `action` one of `goto`/`navigate`, `click`, `fill`/`type`/`input`, `select`,
`press`, or `extract` (a value the user read: `selector`, `as` — the output name —, and
optionally `attribute` and `all`). `compile_action_log` turns it into the `steps:` of a
`browser` action:

- it starts with `goto: <initial_url>` (or the first URL of the log);
- it deduplicates: repeated identical actions collapse, successive typing into one field
  keeps the final value, and a navigation to the page already open is dropped;
- a typed or selected value equal to a value of `params` becomes `<< input.<name> >>`,
  and those names make the input schema (names that look like passwords are `secret`).

The same log and params always compile to the same workflow. `workspace_yaml` wraps it as
a workspace (one action, one task) that `deployments/create` accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import yaml

from engine.errors import Issue, ValidationFailed

_ALIASES = {"navigate": "goto", "goto": "goto", "click": "click", "fill": "fill",
            "type": "fill", "input": "fill", "select": "select", "press": "press",
            "extract": "extract"}
_SECRET = re.compile(r"pass(word)?|secret|token|pin\b", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Action:
    """One recorded action, normalised."""

    action: str
    selector: str | None = None
    value: Any = None
    url: str | None = None
    extract: tuple[tuple[str, Any], ...] = ()  # `as`, `attribute`, `all` of an extract


@dataclass(slots=True)
class CompiledWorkflow:
    """What a log compiles to: browser steps and the input schema they use."""

    steps: list[dict[str, Any]]
    input: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: int = 0


def parse_action_log(log: str | Iterable[Mapping[str, Any]]) -> list[Action]:
    """The actions of a JSONL text (or of already parsed entries); bad lines are 400."""
    entries: list[tuple[int, Any]] = []
    if isinstance(log, str):
        for number, line in enumerate(log.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                raise ValidationFailed(issues=[Issue(
                    message=f"action_log line {number}: not JSON ({exc})",
                    path="action_log")]) from None
    else:
        entries = list(enumerate(log, 1))
    actions = []
    for number, entry in entries:
        if not isinstance(entry, Mapping):
            raise ValidationFailed(issues=[Issue(
                message=f"action_log line {number}: expected an object", path="action_log")])
        kind = _ALIASES.get(str(entry.get("action", "")).lower())
        if kind is None:
            raise ValidationFailed(issues=[Issue(
                message=f"action_log line {number}: unknown action {entry.get('action')!r}",
                path="action_log")])
        selector = entry.get("selector")
        if kind in ("click", "fill", "select", "extract") and not selector:
            raise ValidationFailed(issues=[Issue(
                message=f"action_log line {number}: {kind} needs a selector",
                path="action_log")])
        extract: tuple[tuple[str, Any], ...] = ()
        if kind == "extract":
            name = entry.get("as") or entry.get("value") or f"value_{number}"
            if not isinstance(name, str) or not _NAME.match(name):
                raise ValidationFailed(issues=[Issue(
                    message=f"action_log line {number}: extract 'as' must be a name",
                    path="action_log")])
            extract = (("as", name), *((k, entry[k]) for k in ("attribute", "all")
                                       if entry.get(k) is not None))
        actions.append(Action(kind, selector or None, entry.get("value"),
                              entry.get("url") or None, extract))
    return actions


def _dedupe(actions: list[Action], start_url: str | None) -> tuple[list[Action], int]:
    out: list[Action] = []
    current = start_url
    for action in actions:
        if action.action == "goto":
            target = action.url or action.value
            if not target or target == current:
                continue
            current = target
            action = Action("goto", url=target)
        elif action.url and out and out[-1].action == "click":
            current = action.url  # a click that navigated: the page we are on now
        if out and out[-1] == action:
            continue
        if action.action == "fill" and out and out[-1].action == "fill" \
                and out[-1].selector == action.selector:
            out[-1] = action
            continue
        out.append(action)
    return out, len(actions) - len(out)


def compile_action_log(log: str | Iterable[Mapping[str, Any]], *, initial_url: str | None,
                       params: Mapping[str, Any] | None = None) -> CompiledWorkflow:
    """Compile a recorded action log; see the module docstring."""
    actions = parse_action_log(log)
    params = dict(params or {})
    for name in params:
        if not _NAME.match(name):
            raise ValidationFailed(issues=[Issue(
                message=f"param name {name!r} must be letters, digits and '_'",
                path=f"params.{name}")])
    start = initial_url or next((a.url for a in actions if a.url), None)
    if not start:
        raise ValidationFailed(issues=[Issue(message="'initial_url' is required when the "
                                                     "action log has no URL",
                                             path="initial_url")])
    kept, dropped = _dedupe(actions, start)
    by_value = {str(v): k for k, v in sorted(params.items()) if v not in (None, "")}
    used: dict[str, dict[str, Any]] = {}

    def value_of(raw: Any) -> tuple[Any, str | None]:
        name = by_value.get(str(raw)) if raw is not None else None
        if name is None:
            return raw, None
        spec: dict[str, Any] = {"type": "string", "required": True}
        if _SECRET.search(name):
            spec["secret"] = True
        used[name] = spec
        return f"<< input.{name} >>", name

    steps: list[dict[str, Any]] = [{"goto": start}]
    for action in kept:
        if action.action == "goto":
            steps.append({"goto": str(action.url)})
        elif action.action == "click":
            steps.append({"click": action.selector})
        elif action.action == "extract":
            steps.append({"extract": {"selector": action.selector, **dict(action.extract)}})
        elif action.action == "press":
            steps.append({"press": {"key": str(action.value or "Enter"),
                                    **({"selector": action.selector}
                                       if action.selector else {})}})
        else:
            value, param = value_of("" if action.value is None else action.value)
            entry: dict[str, Any] = {"selector": action.selector, "value": value}
            if param is not None and used[param].get("secret") and action.action == "fill":
                entry["secret"] = True
            steps.append({action.action: entry})
    return CompiledWorkflow(steps=steps, input=dict(sorted(used.items())), dropped=dropped)


def workspace_yaml(name: str, compiled: CompiledWorkflow, *,
                   description: str | None = None) -> str:
    """A workspace file with the action `<name>` and the task `<name>` running it."""
    action: dict[str, Any] = {"type": "browser", "input": compiled.input,
                              "steps": compiled.steps}
    task: dict[str, Any] = {"input": compiled.input, "flow": {"run": {
        "action": name, "input": {k: f"<< input.{k} >>" for k in compiled.input}}}}
    if description:
        action["description"] = task["description"] = description
    document = {"actions": {name: action}, "tasks": {name: task}}
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
