"""The example workspaces under workspaces/: they load, validate, cover the YAML format,
and the shell-only ones run.

The examples double as the user's first contact with Partitur and as a living reference of
docs/yaml.md, so this file checks that together they use every feature of the format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.model import SCALAR_INPUT_TYPES, ActionSpec, InputField, StepSpec, WorkspaceSpec

ROOT = Path(__file__).resolve().parent.parent
WORKSPACES_DIR = ROOT / "workspaces"
WORKSPACES = sorted(p.parent for p in WORKSPACES_DIR.glob("*/.workflows"))
IDS = [p.name for p in WORKSPACES]
# Workspaces that need nothing but a shell, so `partitur run` works on any machine.
RUNNABLE = ("default", "data-pipeline")


def _files(workspace: Path) -> list[Path]:
    return sorted(
        p for p in (workspace / ".workflows").rglob("*") if p.suffix in (".yaml", ".yml")
    )


def _merged(workspace: Path) -> dict[str, Any]:
    """The workspace's files merged the way DESIGN §2 says; a duplicate name fails."""
    merged: dict[str, Any] = {}
    owner: dict[tuple[str, str], Path] = {}
    for path in _files(workspace):
        document = yaml.safe_load(path.read_text()) or {}
        for key, value in document.items():
            if isinstance(value, dict):
                for name, item in value.items():
                    assert (key, name) not in owner, f"{key}.{name}: {owner[key, name]} and {path}"
                    owner[key, name] = path
                    merged.setdefault(key, {})[name] = item
            else:
                merged.setdefault(key, []).extend(value)
    return merged


def _spec(workspace: Path) -> WorkspaceSpec:
    return WorkspaceSpec.model_validate(_merged(workspace))


def _text(workspace: Path) -> str:
    return "\n".join(p.read_text() for p in _files(workspace))


def _actions(spec: WorkspaceSpec) -> Iterator[ActionSpec]:
    yield from spec.actions.values()
    for task in spec.tasks.values():
        for step in task.flow.values():
            if step.inline is not None:
                yield step.inline


def _steps(spec: WorkspaceSpec) -> Iterator[StepSpec]:
    for task in spec.tasks.values():
        yield from task.flow.values()


def _fields(spec: WorkspaceSpec) -> Iterator[InputField]:
    for task in spec.tasks.values():
        yield from task.input.values()
    for action in _actions(spec):
        yield from action.input.values()
    for schema in spec.connection_types.values():
        yield from schema.values()


ALL_SPECS = {p.name: _spec(p) for p in WORKSPACES}


def test_there_are_at_least_three_example_workspaces_split_over_several_files() -> None:
    assert {"default", "data-pipeline", "ops"} <= set(IDS)
    for workspace in WORKSPACES:
        assert len(_files(workspace)) >= 2, f"{workspace.name} should show merging of files"


@pytest.mark.parametrize("workspace", WORKSPACES, ids=IDS)
def test_validates_with_zero_errors(workspace: Path) -> None:
    from engine.compiler.validate import validate_path

    ws, issues = validate_path(workspace)
    errors = [str(i) for i in issues if i.severity == "error"]
    assert errors == []
    assert ws is not None


@pytest.mark.parametrize("workspace", WORKSPACES, ids=IDS)
def test_merged_yaml_is_a_valid_workspace_model(workspace: Path) -> None:
    spec = _spec(workspace)
    assert spec.tasks, f"{workspace.name} has no tasks"
    for task_name, task in spec.tasks.items():
        for step_name, step in task.flow.items():
            assert step.action is None or step.action in spec.actions, (task_name, step_name)
            for dep in step.depends_on:
                assert dep in task.flow, (task_name, step_name, dep)


def test_default_workspace_has_the_hello_world_of_the_tour() -> None:
    spec = ALL_SPECS["default"]
    hello = spec.tasks["hello-world"]
    assert hello.input["name"].default == "World"
    assert list(hello.flow) == ["say-hello"]
    assert hello.flow["say-hello"].action == "greet"
    greet = spec.actions["greet"]
    assert greet.type == "shell"
    assert "Hello" in (greet.script or "") and "OUTPUT:" in (greet.script or "")
    assert {"diamond", "greet-many"} <= set(spec.tasks)


@pytest.mark.parametrize("name", RUNNABLE)
def test_runnable_workspaces_use_shell_only(name: str) -> None:
    spec = ALL_SPECS[name]
    assert {a.type for a in _actions(spec)} == {"shell"}
    assert not spec.triggers


def test_every_action_type_and_shell_form_is_shown() -> None:
    actions = [a for spec in ALL_SPECS.values() for a in _actions(spec)]
    assert {a.type for a in actions} == {"shell", "http", "python", "browser", "task", "approval"}
    shell = [a for a in actions if a.type == "shell"]
    assert any(a.script for a in shell) and any(a.cmd for a in shell)
    assert any(a.interpreter == "sh" for a in shell)
    assert any(a.env for a in shell) and any(a.output for a in actions)
    assert any(a.type == "browser" and a.steps and a.launch for a in actions)
    assert any(a.type == "python" and a.file for a in actions)
    assert any(a.type == "python" and a.script for a in actions)
    assert any(a.type == "approval" and a.message for a in actions)
    assert "type: script" in _text(WORKSPACES_DIR / "ops")  # the alias of shell
    for spec in ALL_SPECS.values():
        for action in spec.actions.values():
            if action.type == "python" and action.file:
                assert (WORKSPACES_DIR / "ops" / action.file).is_file()


def test_named_and_both_inline_step_forms_are_shown() -> None:
    raw_steps = [
        step
        for workspace in WORKSPACES
        for path in _files(workspace)
        for task in (yaml.safe_load(path.read_text()) or {}).get("tasks", {}).values()
        for step in task["flow"].values()
    ]
    assert any(isinstance(s.get("action"), str) for s in raw_steps)
    assert any(isinstance(s.get("action"), dict) for s in raw_steps)
    assert any("script" in s or "cmd" in s for s in raw_steps)


def test_every_input_field_option_and_type_is_shown() -> None:
    fields = [f for spec in ALL_SPECS.values() for f in _fields(spec)]
    types = {f.type for f in fields}
    assert set(SCALAR_INPUT_TYPES) <= types
    connection_types = {t for spec in ALL_SPECS.values() for t in spec.connection_types}
    assert types & connection_types, "no input uses a connection type"
    assert any(f.required for f in fields)
    assert any(f.default is not None for f in fields)
    assert any(isinstance(f.default, str) and "secret." in f.default for f in fields)
    assert any(f.options for f in fields) and any(f.multiple for f in fields)
    assert any(f.secret for f in fields) and any(f.description for f in fields)
    assert any(f.label for f in fields) and any(f.pattern for f in fields)
    assert any(f.min is not None for f in fields) and any(f.max is not None for f in fields)


def test_every_step_option_is_shown() -> None:
    steps = [s for spec in ALL_SPECS.values() for s in _steps(spec)]
    assert any(s.depends_on for s in steps) and any(s.tags for s in steps)
    assert any(s.when is not None for s in steps)
    assert any(s.for_each is not None and s.sequential for s in steps)
    assert any(s.for_each is not None and not s.sequential for s in steps)
    assert any(s.continue_on_failure for s in steps) and any(s.timeout for s in steps)
    retries = [s.retry for s in steps if s.retry] + [
        a.retry for spec in ALL_SPECS.values() for a in _actions(spec) if a.retry
    ]
    assert any(r.max_attempts > 1 and r.delay > 0 for r in retries)
    assert any(r.backoff == "exponential" and r.jitter > 0 and r.max_delay for r in retries)
    assert any(r.on_lost for r in retries)
    assert "retry: 2" in _text(WORKSPACES_DIR / "data-pipeline")  # the integer shorthand


def test_when_has_true_and_false_paths_that_converge() -> None:
    flow = ALL_SPECS["data-pipeline"].tasks["release"].flow
    guarded = [name for name, step in flow.items() if step.when is not None]
    assert len(guarded) == 2
    assert any(set(guarded) <= set(step.depends_on) for step in flow.values())


def test_every_task_option_and_hook_is_shown() -> None:
    tasks = [t for spec in ALL_SPECS.values() for t in spec.tasks.values()]
    assert all(t.description for t in tasks) and all(t.folder for t in tasks)
    assert any(t.timeout for t in tasks) and any(t.retry for t in tasks)
    assert any(t.concurrency and t.concurrency.key for t in tasks)
    assert any(t.concurrency and t.concurrency.key is None for t in tasks)
    for hook in ("on_success", "on_error", "on_cancel", "on_suspended"):
        assert any(getattr(t, hook) for t in tasks), hook
    ops = ALL_SPECS["ops"]
    assert ops.on_error and ops.on_cancel
    hooks = [h for t in tasks for h in t.on_error] + list(ops.on_error)
    assert any(h.action for h in hooks) and any(h.task for h in hooks)


def test_every_trigger_kind_is_shown() -> None:
    ops = ALL_SPECS["ops"]
    triggers = list(ops.triggers.values())
    assert {t.type for t in triggers} == {"scheduler", "webhook", "event"}
    crons = [t for t in triggers if t.type == "scheduler"]
    assert {len((t.cron or "").split()) for t in crons} == {5, 6}
    assert any(t.timezone != "UTC" for t in crons) and any(not t.enabled for t in crons)
    assert any(t.input for t in crons)
    assert {t.concurrency for t in crons} >= {"skip", "cancel_previous"}
    assert {t.misfire for t in crons} == {"skip", "run_once"}
    hooks = [t for t in triggers if t.type == "webhook"]
    assert {t.mode for t in hooks} == {"sync", "async"}
    assert all(t.name and t.secret for t in hooks) and any(t.timeout_secs != 30 for t in hooks)
    events = [t for t in triggers if t.type == "event"]
    assert events and all(t.on and t.on.task in ops.tasks for t in events)
    for trigger in triggers:
        assert trigger.task in ops.tasks


def test_secrets_and_connections_are_shown() -> None:
    ops = ALL_SPECS["ops"]
    assert ops.secrets and all(
        "env." in value and "default(" in value for value in ops.secrets.values()
    )
    assert ops.connection_types and ops.connections
    for connection in ops.connections.values():
        assert connection.type in ops.connection_types


def test_every_templating_feature_is_shown() -> None:
    text = "\n".join(_text(w) for w in WORKSPACES)
    for marker in (
        "<< input.", "<% if", "<% else %>", "<% endif %>", "<#", "#>", "steps.", "steps['",
        "each.item", "each.index", "each.total", "job.id", "hook.", "secret.", "env.",
        "state", "| raw", "OUTPUT:", "STATE:", "PARTITUR_INPUT_", "PARTITUR_ATTEMPT",
        "publish_beta.output",  # the underscore shorthand of a hyphenated step
    ):
        assert marker in text, marker


def _partitur(*args: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )


RUNS = [
    ("default", "hello-world", ["-i", "name=Ada"], {"say-hello": {"greeting": "Hello Ada"}}),
    ("default", "diamond", [], {"join": {"sum": 31}}),
    ("default", "greet-many", [], {
        "summary": {"greetings": ["Hello Ada", "Hello Grace", "Hello Linus"]}
    }),
    ("data-pipeline", "release", ["-i", "channel=beta"], {}),
    ("data-pipeline", "batch", ["-i", "fail_on=beta"], {}),
]


@pytest.mark.parametrize(("workspace", "task", "args", "outputs"), RUNS,
                         ids=[f"{w}/{t}" for w, t, _, _ in RUNS])
def test_shell_only_tasks_run_to_completion(
    workspace: str, task: str, args: list[str], outputs: dict[str, Any]
) -> None:
    result = _partitur(
        "run", task, "--workspace", str(WORKSPACES_DIR / workspace), *args, "--json", "--quiet"
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    job = json.loads(result.stdout)
    assert job["status"] == "completed"
    steps = {s["step_name"]: s for s in job["steps"]}
    for step, output in outputs.items():
        assert steps[step]["output"] == output


def test_hello_world_prints_the_greeting() -> None:
    result = _partitur("run", "hello-world", "--workspace", str(WORKSPACES_DIR / "default"),
                       "-i", "name=Ada")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Hello Ada" in result.stdout
