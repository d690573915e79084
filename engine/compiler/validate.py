"""Workspace validation: YAML documents → a `LoadedWorkspace`, or every problem at once.

Each top-level entry (an action, a task, a trigger …) is validated on its own, so one bad
task does not hide the errors of another; cross-references (actions, steps, tasks,
connection types), dependency cycles, templates and cron expressions are checked on the
entries that validated. Every problem is an `Issue` with file, line, column and field
path; warnings (such as `| raw` in a shell script) do not stop a workspace from loading.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from engine.compiler import templating
from engine.compiler.diagnostics import (
    did_you_mean,
    dotted,
    format_issues,
    pydantic_issues,
    sort_issues,
)
from engine.compiler.loader import Document, LoadResult, NodePath, load_files, load_folder
from engine.errors import Issue, WorkspaceInvalid
from engine.model import (
    MERGED_KEYS,
    SCALAR_INPUT_TYPES,
    TOP_LEVEL_KEYS,
    ActionSpec,
    ConnectionSpec,
    HookSpec,
    InputField,
    StepSpec,
    TaskSpec,
    TriggerSpec,
    WorkspaceSpec,
)
from engine.triggers.cycles import event_cycles

HOOK_KINDS: tuple[str, ...] = ("on_success", "on_error", "on_cancel", "on_suspended")
_SCHEMA = TypeAdapter(dict[str, InputField])
_MODELS: dict[str, Any] = {
    "actions": ActionSpec,
    "tasks": TaskSpec,
    "triggers": TriggerSpec,
    "connection_types": _SCHEMA,
    "connections": ConnectionSpec,
}
# Action fields that hold templates (checked for syntax; shell bodies also for `| raw`).
_ACTION_TEMPLATES = ("script", "cmd", "url", "headers", "query", "body", "form", "env", "message")


@dataclass(frozen=True, slots=True)
class Entry:
    """Where one top-level entry came from: its document and path in it."""

    document: Document
    path: NodePath
    raw: Any


@dataclass(frozen=True, eq=False)
class LoadedWorkspace:
    """A workspace that validated: its spec, revision and where everything came from.

    `path` is the workspace folder (relative paths in actions resolve against it).
    `entries` maps `(kind, name)` (for example `("tasks", "build")`, or `("on_error", "0")`
    for the first workspace hook) to its origin.
    """

    name: str
    path: Path
    revision: str
    spec: WorkspaceSpec
    warnings: tuple[Issue, ...] = ()
    entries: Mapping[tuple[str, str], Entry] = field(default_factory=dict, repr=False)
    plans: dict[str, Any] = field(default_factory=dict, repr=False)
    """Compiled plans by task name (filled by `engine.compiler.plan`)."""

    def where(self, kind: str, name: str) -> tuple[str, int] | None:
        """`(file, line)` of an entry's name, e.g. `where("tasks", "build")`."""
        located = self.locate(kind, name)
        return (located[0], located[1]) if located else None

    def locate(self, kind: str, name: str, *path: str | int) -> tuple[str, int, int] | None:
        """`(file, line, column)` of a field inside an entry (or of its nearest parent)."""
        entry = self.entries.get((kind, name))
        if entry is None:
            return None
        line, column = entry.document.locate((*entry.path, *path), key=not path)
        return entry.document.file, line, column


def load_workspace(path: Path, name: str = "default") -> LoadedWorkspace:
    """Load and validate the workspace folder `path`; raise `WorkspaceInvalid` with every
    error at once."""
    workspace, issues = validate_path(path, name)
    if workspace is None:
        raise WorkspaceInvalid(issues=[i for i in issues if i.severity == "error"])
    return workspace


def load_workspace_files(
    files: Mapping[str, bytes], *, path: Path, name: str = "default"
) -> LoadedWorkspace:
    """Validate an in-memory file set (`{relative_path: bytes}`, e.g. a tarball or a git
    revision) whose files live in the folder `path`."""
    workspace, issues = validate_result(load_files(files), path, name)
    if workspace is None:
        raise WorkspaceInvalid(issues=[i for i in issues if i.severity == "error"])
    return workspace


def validate_path(path: Path, name: str = "default") -> tuple[LoadedWorkspace | None, list[Issue]]:
    """Validate the workspace folder `path`: the workspace (None on errors) and every
    error and warning."""
    return validate_result(load_folder(path), path, name)


def validate_result(
    result: LoadResult, path: Path, name: str = "default"
) -> tuple[LoadedWorkspace | None, list[Issue]]:
    """Validate parsed documents (see `validate_path`)."""
    checker = _Checker(result.documents)
    spec = checker.run()
    issues = sort_issues([*result.issues, *checker.issues])
    if spec is None or any(i.severity == "error" for i in issues):
        return None, issues
    warnings = tuple(i for i in issues if i.severity != "error")
    workspace = LoadedWorkspace(
        name=name,
        path=path,
        revision=result.revision,
        spec=spec,
        warnings=warnings,
        entries=checker.origins,
    )
    return workspace, issues


def report(path: Path, revision: str | None = None) -> tuple[str, int]:
    """What `partitur validate PATH` prints, and its exit code (1 on errors). `revision`
    is shown instead of the YAML's own hash (a served folder's covers all its files)."""
    workspace, issues = validate_path(path)
    text = format_issues(issues)
    if workspace is None:
        return text, 1
    spec = workspace.spec
    summary = (
        f"{path}: ok ({len(spec.tasks)} tasks, {len(spec.actions)} actions, "
        f"{len(spec.triggers)} triggers; revision {revision or workspace.revision})"
    )
    return (f"{text}\n{summary}" if issues else summary), 0


class _Checker:
    """Runs every check over a set of documents, collecting issues."""

    def __init__(self, documents: Iterable[Document]) -> None:
        self.documents = list(documents)
        self.issues: list[Issue] = []
        self.origins: dict[tuple[str, str], Entry] = {}
        self.raw: dict[str, dict[str, Entry]] = {kind: {} for kind in MERGED_KEYS}
        self.hooks: dict[str, list[Entry]] = {kind: [] for kind in HOOK_KINDS}
        # Entries that failed to validate still exist for cross-references.
        self.invalid: dict[str, set[str]] = {kind: set() for kind in MERGED_KEYS}
        # Tasks that failed to validate: their valid steps, and the names of all steps.
        self.partial: dict[str, tuple[TaskSpec, set[str]]] = {}

    # --- reporting -------------------------------------------------------------------

    def error(
        self,
        entry: Entry,
        sub: Iterable[str | int],
        message: str,
        *,
        hint: str | None = None,
        severity: str = "error",
        key: bool = False,
    ) -> None:
        full = (*entry.path, *sub)
        self.issues.append(
            entry.document.issue(
                message, full, dotted(full), hint=hint, severity=severity, key=key
            )
        )

    # --- structure -------------------------------------------------------------------

    def run(self) -> WorkspaceSpec | None:
        for document in self.documents:
            self._collect(document)
        models = self._validate_entries()
        hooks = self._validate_hooks()
        spec = WorkspaceSpec.model_construct(
            actions=models["actions"],
            tasks=models["tasks"],
            triggers=models["triggers"],
            secrets={name: e.raw for name, e in self.raw["secrets"].items()},
            connection_types=models["connection_types"],
            connections=models["connections"],
            on_success=hooks["on_success"],
            on_error=hooks["on_error"],
            on_cancel=hooks["on_cancel"],
            on_suspended=hooks["on_suspended"],
        )
        _CrossChecks(self, spec).run()
        return spec

    def _collect(self, document: Document) -> None:
        data = document.data
        if data is None:
            return
        root = Entry(document, (), data)
        if not isinstance(data, dict):
            self.error(root, (), "a workflow file must be a mapping of top-level keys "
                       f"({', '.join(TOP_LEVEL_KEYS)})")
            return
        for key, value in data.items():
            key = str(key)
            if key not in TOP_LEVEL_KEYS:
                self.error(root, (key,), f"unknown top-level key '{key}'",
                           hint=did_you_mean(key, TOP_LEVEL_KEYS), key=True)
            elif value is None:
                continue
            elif key in HOOK_KINDS:
                if not isinstance(value, list):
                    self.error(root, (key,), f"'{key}' must be a list of hooks")
                    continue
                for index, item in enumerate(value):
                    entry = Entry(document, (key, index), item)
                    self.origins[(key, str(len(self.hooks[key])))] = entry
                    self.hooks[key].append(entry)
            elif not isinstance(value, dict):
                self.error(root, (key,), f"'{key}' must be a mapping of names")
            else:
                for name, raw in value.items():
                    self._register(key, str(name), Entry(document, (key, str(name)), raw))

    def _register(self, kind: str, name: str, entry: Entry) -> None:
        first = self.raw[kind].get(name)
        if first is None:
            self.raw[kind][name] = entry
            self.origins[(kind, name)] = entry
            return
        line, _ = first.document.locate(first.path, key=True)
        noun = kind.removesuffix("s").replace("_", " ")
        self.error(entry, (), f"duplicate {noun} '{name}': also defined in "
                   f"{first.document.file}:{line}", key=True)

    def _validate_entries(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {kind: {} for kind in MERGED_KEYS}
        for kind, model in _MODELS.items():
            for name, entry in self.raw[kind].items():
                try:
                    if isinstance(model, TypeAdapter):
                        out[kind][name] = model.validate_python(entry.raw)
                    else:
                        out[kind][name] = model.model_validate(entry.raw)
                except ValidationError as exc:
                    self.issues.extend(
                        pydantic_issues(exc, model, entry.document, entry.path, entry.raw)
                    )
                    self.invalid[kind].add(name)
                    if kind == "tasks":
                        self._keep_partial(name, entry.raw)
        return out

    def _keep_partial(self, name: str, raw: Any) -> None:
        """Keep the steps of an invalid task that validate, for the cross-checks."""
        flow = raw.get("flow") if isinstance(raw, dict) else None
        if not isinstance(flow, dict):
            return
        steps: dict[str, StepSpec] = {}
        for step_name, step_raw in flow.items():
            try:
                steps[str(step_name)] = StepSpec.model_validate(step_raw)
            except ValidationError:
                pass  # reported with the task
        task = TaskSpec.model_construct(flow=steps)
        self.partial[name] = (task, {str(n) for n in flow})

    def _validate_hooks(self) -> dict[str, list[HookSpec]]:
        out: dict[str, list[HookSpec]] = {}
        for kind, entries in self.hooks.items():
            out[kind] = []
            for entry in entries:
                try:
                    out[kind].append(HookSpec.model_validate(entry.raw))
                except ValidationError as exc:
                    self.issues.extend(
                        pydantic_issues(exc, HookSpec, entry.document, entry.path, entry.raw)
                    )
        return out


class _CrossChecks:
    """Checks across entries: names, dependencies, templates, cron, types."""

    def __init__(self, checker: _Checker, spec: WorkspaceSpec) -> None:
        self.checker = checker
        self.spec = spec
        invalid = checker.invalid
        self.tasks = set(spec.tasks) | invalid["tasks"]
        self.actions = set(spec.actions) | invalid["actions"]
        self.connection_types = set(spec.connection_types) | invalid["connection_types"]
        self.input_types = set(SCALAR_INPUT_TYPES) | self.connection_types

    def entry(self, kind: str, name: str) -> Entry:
        return self.checker.origins[(kind, name)]

    def error(self, entry: Entry, sub: Iterable[str | int], message: str, **kw: Any) -> None:
        self.checker.error(entry, sub, message, **kw)

    def run(self) -> None:
        for name, action in self.spec.actions.items():
            self.check_action(self.entry("actions", name), (), action)
        for name, task in self.spec.tasks.items():
            self.check_task(self.entry("tasks", name), task, set(task.flow))
        for name, (task, names) in self.checker.partial.items():
            self.check_task(self.entry("tasks", name), task, names)
        webhooks: dict[str, str] = {}
        for name, trigger in self.spec.triggers.items():
            entry = self.entry("triggers", name)
            self.check_trigger(entry, trigger)
            if trigger.type == "webhook":
                hook_name = trigger.name or name
                if hook_name in webhooks:
                    self.error(entry, ("name",) if trigger.name else (),
                               f"webhook name '{hook_name}' is also used by trigger "
                               f"'{webhooks[hook_name]}'", key=not trigger.name)
                webhooks.setdefault(hook_name, name)
        for name, cycle in event_cycles(self.spec.triggers):
            self.error(self.entry("triggers", name), ("on", "task"),
                       "event triggers form a cycle: " + " → ".join(cycle),
                       hint="a job's end would start jobs forever")
        for kind in HOOK_KINDS:
            for index, hook in enumerate(getattr(self.spec, kind)):
                self.check_hook(self.entry(kind, str(index)), (), hook)
        for name, secret in self.spec.secrets.items():
            self.check_templates(self.entry("secrets", name), (), secret)
        for name, props in self.spec.connection_types.items():
            entry = self.entry("connection_types", name)
            for prop, spec in props.items():
                if spec.type not in SCALAR_INPUT_TYPES:
                    self.error(entry, (prop, "type"), f"unknown property type '{spec.type}'",
                               hint=self._type_hint(spec.type, SCALAR_INPUT_TYPES))
        for name, connection in self.spec.connections.items():
            self.check_connection(self.entry("connections", name), connection)

    # --- entries ---------------------------------------------------------------------

    def check_schema(self, entry: Entry, sub: NodePath, schema: Mapping[str, InputField]) -> None:
        for field_name, spec in schema.items():
            if spec.type not in self.input_types:
                self.error(entry, (*sub, field_name, "type"),
                           f"unknown input type '{spec.type}'",
                           hint=self._type_hint(spec.type, sorted(self.input_types)))

    def _type_hint(self, word: str, known: Iterable[str]) -> str:
        known = list(known)
        return did_you_mean(word, known) or f"use one of: {', '.join(known)}"

    def check_action(
        self, entry: Entry, sub: NodePath, action: ActionSpec, scope: _Scope | None = None
    ) -> None:
        self.check_schema(entry, (*sub, "input"), action.input)
        if action.output:
            self.check_schema(entry, (*sub, "output"), action.output)
        if action.type == "task" and action.task not in self.tasks:
            self.error(entry, (*sub, "task"), f"unknown task '{action.task}'",
                       hint=did_you_mean(str(action.task), self.tasks))
        for field_name in _ACTION_TEMPLATES:
            value = getattr(action, field_name)
            if value in (None, {}, ""):
                continue
            self.check_templates(entry, (*sub, field_name), value, scope)
            if action.type == "shell" and field_name in ("script", "cmd") and \
                    templating.uses_raw(value):
                self.error(entry, (*sub, field_name), "value is not shell-quoted",
                           hint="'| raw' inserts the value into the script as is",
                           severity="warning")

    def check_task(self, entry: Entry, task: TaskSpec, names: set[str]) -> None:
        """Check a task's steps; `names` are all its step names (also ones that did not
        validate, which are missing from `task.flow`)."""
        self.check_schema(entry, ("input",), task.input)
        flow = task.flow
        for step_name, step in flow.items():
            sub: NodePath = ("flow", step_name)
            if "[" in step_name or "]" in step_name:
                self.error(entry, sub, f"step name '{step_name}' must not contain '[' or ']'",
                           hint="loop instances are named 'step[0]', 'step[1]', …", key=True)
            for index, dep in enumerate(step.depends_on):
                if dep not in names:
                    self.error(entry, (*sub, "depends_on", index),
                               f"depends on unknown step '{dep}'",
                               hint=did_you_mean(dep, names))
        cyclic = self.check_cycles(entry, flow)
        for step_name, step in flow.items():
            sub = ("flow", step_name)
            scope = None if step_name in cyclic else _Scope.of(step_name, flow, names)
            if step.action is not None and step.action not in self.actions:
                self.error(entry, (*sub, "action"), f"unknown action '{step.action}'",
                           hint=did_you_mean(step.action, self.actions))
            if step.inline is not None:
                where = (*sub, "action") if isinstance(_raw_at(entry, (*sub, "action")), dict) \
                    else sub
                self.check_action(entry, where, step.inline, scope)
            for field_name in ("input", "when", "for_each"):
                value = getattr(step, field_name)
                if value is not None:
                    self.check_templates(entry, (*sub, field_name), value, scope)
        for kind in HOOK_KINDS:
            for index, hook in enumerate(getattr(task, kind)):
                self.check_hook(entry, (kind, index), hook)

    def check_cycles(self, entry: Entry, flow: Mapping[str, StepSpec]) -> set[str]:
        """Report each dependency cycle once; return the steps on cycles."""
        done: set[str] = set()
        on_cycle: set[str] = set()
        reported: set[frozenset[str]] = set()
        for root in flow:
            if root in done:
                continue
            # Depth-first without recursion: a flow may have thousands of steps.
            stack: list[str] = [root]
            depth = {root: 0}
            pending = [iter(flow[root].depends_on)]
            while pending:
                dep = next(pending[-1], None)
                if dep is None:
                    name = stack.pop()
                    del depth[name]
                    done.add(name)
                    pending.pop()
                elif dep in depth:
                    cycle = stack[depth[dep]:]
                    on_cycle.update(cycle)
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        # Name the cycle along the dependency edges, from `dep`.
                        path = [*cycle, dep]
                        index = flow[path[0]].depends_on.index(path[1])
                        self.error(entry, ("flow", path[0], "depends_on", index),
                                   "dependency cycle: " + " → ".join(path))
                elif dep in flow and dep not in done:
                    depth[dep] = len(stack)
                    stack.append(dep)
                    pending.append(iter(flow[dep].depends_on))
        return on_cycle

    def check_trigger(self, entry: Entry, trigger: TriggerSpec) -> None:
        if trigger.task not in self.tasks:
            self.error(entry, ("task",), f"unknown task '{trigger.task}'",
                       hint=did_you_mean(trigger.task, self.tasks))
        if trigger.type == "scheduler" and trigger.cron:
            problem = cron_problem(trigger.cron)
            if problem:
                self.error(entry, ("cron",), problem)
        try:
            zoneinfo.ZoneInfo(trigger.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            self.error(entry, ("timezone",), f"unknown timezone '{trigger.timezone}'",
                       hint="use an IANA name such as 'Europe/Oslo' or 'UTC'")
        if trigger.on is not None and trigger.on.task not in self.tasks:
            self.error(entry, ("on", "task"), f"unknown task '{trigger.on.task}'",
                       hint=did_you_mean(trigger.on.task, self.tasks))
        task = self.spec.tasks.get(trigger.task)
        if task is not None:
            for key in trigger.input:
                if key not in task.input:
                    self.error(entry, ("input", key), f"task '{trigger.task}' has no input "
                               f"'{key}'", hint=did_you_mean(key, task.input), key=True)
        self.check_templates(entry, ("input",), trigger.input)
        if trigger.secret:
            self.check_templates(entry, ("secret",), trigger.secret)

    def check_hook(self, entry: Entry, sub: NodePath, hook: HookSpec) -> None:
        if hook.action is not None and hook.action not in self.actions:
            self.error(entry, (*sub, "action"), f"unknown action '{hook.action}'",
                       hint=did_you_mean(hook.action, self.actions))
        if hook.task is not None and hook.task not in self.tasks:
            self.error(entry, (*sub, "task"), f"unknown task '{hook.task}'",
                       hint=did_you_mean(hook.task, self.tasks))
        self.check_templates(entry, (*sub, "input"), hook.input)

    def check_connection(self, entry: Entry, connection: ConnectionSpec) -> None:
        props = connection.model_extra or {}
        schema = self.spec.connection_types.get(connection.type)
        if schema is None:
            if connection.type not in self.connection_types:
                self.error(entry, ("type",), f"unknown connection type '{connection.type}'",
                           hint=did_you_mean(connection.type, self.connection_types))
            return
        for prop, spec in schema.items():
            if spec.required and spec.default is None and props.get(prop) is None:
                self.error(entry, (), f"missing property '{prop}' required by connection "
                           f"type '{connection.type}'", key=True)
        for prop, value in props.items():
            if prop not in schema:
                self.error(entry, (prop,), f"unknown property '{prop}' of connection type "
                           f"'{connection.type}'", hint=did_you_mean(prop, schema), key=True)
            self.check_templates(entry, (prop,), value)

    # --- templates -------------------------------------------------------------------

    def check_templates(
        self,
        entry: Entry,
        sub: NodePath,
        value: Any,
        scope: _Scope | None = None,
    ) -> None:
        """Syntax of every template in `value`, and (for steps) the steps it refers to."""
        if isinstance(value, dict):
            for key, item in value.items():
                self.check_templates(entry, (*sub, str(key)), item, scope)
            return
        if isinstance(value, list):
            for index, item in enumerate(value):
                self.check_templates(entry, (*sub, index), item, scope)
            return
        if not isinstance(value, str) or not templating.has_template(value):
            return
        problems = templating.check_syntax(value, where=dotted((*entry.path, *sub)))
        for problem in problems:
            self.error(entry, sub, problem.message, hint=problem.hint)
        if problems or scope is None:
            return
        for ref in sorted(templating.referenced_steps(value)):
            target = _resolve_step(ref, scope.names)
            if target is None:
                known = [*scope.names, *(n.replace("-", "_") for n in scope.names)]
                self.error(entry, sub, f"unknown step '{ref}'", hint=did_you_mean(ref, known))
            elif target not in scope.upstream and scope.complete:
                self.error(entry, sub, f"step '{scope.step}' uses step '{target}' but does "
                           "not depend on it", hint=f"add '{target}' to depends_on")


def cron_problem(expression: str) -> str | None:
    """Why a cron expression is invalid (5 fields, or 6 with seconds first), or None."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        return (f"invalid cron expression '{expression}': expected 5 fields "
                f"(or 6 with seconds first), got {len(fields)}")
    from croniter import croniter  # only workspaces with cron triggers load it

    try:
        croniter(expression, second_at_beginning=len(fields) == 6)
    except (ValueError, KeyError, TypeError) as exc:
        return f"invalid cron expression '{expression}': {exc}"
    return None


class _Scope:
    """What the templates of one step may refer to.

    `upstream` is every step it depends on, directly or not (computed on first use: most
    steps refer to no other step); `complete` is False when the walk met a step that did
    not validate (its own dependencies are unknown).
    """

    def __init__(self, step: str, flow: Mapping[str, StepSpec], names: set[str]) -> None:
        self.step = step
        self.flow = flow
        self.names = names
        self._upstream: set[str] | None = None
        self._complete = True

    @classmethod
    def of(cls, step: str, flow: Mapping[str, StepSpec], names: set[str]) -> _Scope:
        return cls(step, flow, names)

    @property
    def upstream(self) -> set[str]:
        if self._upstream is None:
            seen: set[str] = set()
            todo = list(self.flow[self.step].depends_on)
            while todo:
                dep = todo.pop()
                if dep in seen:
                    continue
                seen.add(dep)
                if dep in self.flow:
                    todo.extend(self.flow[dep].depends_on)
                else:
                    self._complete = False
            self._upstream = seen
        return self._upstream

    @property
    def complete(self) -> bool:
        _ = self.upstream
        return self._complete


def _resolve_step(ref: str, names: Iterable[str]) -> str | None:
    names = list(names)
    if ref in names:
        return ref
    for name in names:
        if name.replace("-", "_") == ref:
            return name
    return None


def _raw_at(entry: Entry, sub: NodePath) -> Any:
    current = entry.raw
    for part in sub:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            current = current[part]
        else:
            return None
    return current
