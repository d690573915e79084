"""Tests of engine.compiler.plan: tasks compiled into Plans."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from engine.compiler.loader import load_files
from engine.compiler.plan import compile_task, topological_order
from engine.compiler.validate import LoadedWorkspace, load_workspace, validate_result
from engine.core.plan import Plan, Retry
from engine.errors import CompileError, NotFound
from engine.model import StepSpec

FIXTURES = Path(__file__).parent.parent / "fixtures" / "workspaces"


@pytest.fixture(scope="module")
def ws() -> LoadedWorkspace:
    return load_workspace(FIXTURES / "valid")


def test_steps_in_topological_then_yaml_order(ws: LoadedWorkspace) -> None:
    plan = compile_task(ws, "release")
    assert list(plan.steps) == ["compile", "docs", "package", "publish"]
    assert plan.steps["package"].depends_on == ("compile", "docs")
    assert plan.leaves() == ["publish"]


def test_named_action_with_its_limits(ws: LoadedWorkspace) -> None:
    step = compile_task(ws, "release").steps["compile"]
    assert (step.action_name, step.action_type) == ("build", "shell")
    assert step.action["script"] == "echo building << input.version >>"
    assert step.action["input"]["version"]["required"] is True
    assert step.input == {"version": "<< input.version >>"}
    assert step.timeout == 30.0
    assert step.retry == Retry(max_attempts=3, delay=2.0, backoff="exponential")
    assert step.tags == ("linux",)


def test_step_limits_win_over_the_action(ws: LoadedWorkspace) -> None:
    step = compile_task(ws, "release").steps["docs"]
    assert step.action_name == "build"
    assert step.timeout == 5.0
    assert step.retry == Retry(max_attempts=1)
    assert step.tags == ("docs",)


def test_inline_actions_are_named_after_their_step(ws: LoadedWorkspace) -> None:
    plan = compile_task(ws, "release")
    flat, nested = plan.steps["package"], plan.steps["publish"]
    assert (flat.action_name, flat.action_type) == ("package", "shell")
    assert flat.action["cmd"] == "tar czf app.tgz build/"
    assert flat.timeout is None and flat.retry == Retry() and flat.tags == ()
    assert (nested.action_name, nested.action["script"]) == (
        "publish", "echo << steps.package.output >>",
    )
    assert nested.when == "<< steps.compile.status == 'completed' >>"


def test_task_limits_and_hooks(ws: LoadedWorkspace) -> None:
    plan = compile_task(ws, "release")
    assert plan.task == "release"
    assert plan.timeout == 600.0
    assert plan.retry == Retry(max_attempts=2)
    assert dict(plan.hooks) == {
        "on_error": [
            {"action": None, "task": "cleanup", "input": {}},
            {"action": "notify", "task": None, "input": {"message": "job failed"}},
        ]
    }
    # The cleanup task has no hooks of its own, only the workspace's.
    assert [h["action"] for h in compile_task(ws, "cleanup").hooks["on_error"]] == ["notify"]


def test_plan_round_trips_through_plain_data(ws: LoadedWorkspace) -> None:
    plan = compile_task(ws, "release")
    assert Plan.from_dict(plan.to_dict()) == plan


def test_unknown_task(ws: LoadedWorkspace) -> None:
    with pytest.raises(NotFound) as raised:
        compile_task(ws, "nope")
    assert "nope" in raised.value.message


def test_plans_are_cached_per_workspace(ws: LoadedWorkspace) -> None:
    assert compile_task(ws, "cleanup") is compile_task(ws, "cleanup")
    again = load_workspace(FIXTURES / "valid")
    assert compile_task(again, "cleanup") == compile_task(ws, "cleanup")


def test_large_flow_compiles_fast() -> None:
    # A chain of 2,000 steps, written in reverse order.
    lines = ["tasks:", "  chain:", "    flow:"]
    for i in reversed(range(2000)):
        lines.append(f"      s{i}:")
        lines.append("        cmd: echo")
        if i:
            lines.append(f"        depends_on: [s{i - 1}]")
    files = {".workflows/chain.yaml": "\n".join(lines).encode()}
    loaded, issues = validate_result(load_files(files), Path("."))
    assert loaded is not None, issues
    started = time.perf_counter()
    plan = compile_task(loaded, "chain")
    assert time.perf_counter() - started < 1.0
    assert list(plan.steps)[:3] == ["s0", "s1", "s2"]
    assert len(plan.steps) == 2000


def test_topological_order_refuses_cycles() -> None:
    flow = {
        "a": StepSpec(cmd="x", depends_on=["b"]),  # type: ignore[call-arg]
        "b": StepSpec(cmd="x", depends_on=["a"]),  # type: ignore[call-arg]
        "c": StepSpec(cmd="x"),  # type: ignore[call-arg]
    }
    with pytest.raises(CompileError) as raised:
        topological_order(flow, "t")
    assert raised.value.issues[0].message == "dependency cycle among: a, b"


def test_compiles_the_task_of_an_in_memory_workspace(tmp_path: Path) -> None:
    text = textwrap.dedent("""
        tasks:
          t:
            flow:
              z: { cmd: echo z }
              y: { cmd: echo y }
              x: { cmd: echo x, depends_on: [z, y] }
    """)
    loaded, _ = validate_result(load_files({".workflows/t.yaml": text.encode()}), tmp_path)
    assert loaded is not None
    assert list(compile_task(loaded, "t").steps) == ["z", "y", "x"]
