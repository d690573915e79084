"""Tests of `TemplateStepRenderer` over job states folded from real events."""

from __future__ import annotations

import re
from typing import Any

import pytest

from engine.compiler.step_render import TemplateStepRenderer
from engine.core import events as ev
from engine.core.plan import Plan, PlanStep
from engine.core.state import JobState, fold
from engine.errors import RenderError

SHELL = {"type": "shell", "script": "echo hi"}


def _step(name: str, **fields: Any) -> PlanStep:
    return PlanStep(name=name, action_name=name, action_type="shell", action=SHELL, **fields)


PLAN = Plan(
    task="deploy",
    steps={
        "fetch-data": _step("fetch-data", input={"url": "<< input.url >>"}),
        "check": _step("check", depends_on=("fetch-data",),
                       when="<< fetch_data.output.ok >>",
                       input={"rows": "<< steps['fetch-data'].output.rows >>",
                              "label": "rows: << fetch_data.output.rows | length >>"}),
        "fan": _step("fan", depends_on=("fetch-data",),
                     for_each="<< steps['fetch-data'].output.rows >>",
                     input={"row": "<< each.item >>", "pos": "<< each.index >>/<< each.total >>",
                            "who": "<< job.task >>@<< job.workspace >>"}),
        "literal": _step("literal", for_each=["<< input.url >>", 2, {"k": "<< input.n >>"}]),
        "after": _step("after", depends_on=("fan",),
                       when="<< steps.fan.output | length > 1 >>",
                       input={"all": "<< fan.output >>", "status": "<< fan.status >>",
                              "st": "<< state.counter >>", "token": "<< secret.token >>"}),
        "bad": _step("bad", input={"x": "<< input.nme >>"}, when="<< input.missing >>",
                     for_each="<< input.url >>"),
    },
)

T = 1000.0


def _events(*more: ev.Event) -> list[ev.Event]:
    created = ev.JobCreated(
        ts=T, job_id="job-1", workspace="ops", revision="rev-1", task="deploy",
        input={"url": "https://example.test/x", "n": 5}, plan=PLAN.to_dict(),
    )
    return [created, ev.JobStarted(ts=T), *more]


def _fetched(output: Any) -> list[ev.Event]:
    return [
        ev.StepReady(ts=T, step="fetch-data", input={"url": "https://example.test/x"}),
        ev.StepStarted(ts=T, step="fetch-data", attempt=1, worker_id="w1"),
        ev.StepCompleted(ts=T, step="fetch-data", output=output),
    ]


@pytest.fixture
def renderer() -> TemplateStepRenderer:
    return TemplateStepRenderer(secrets={"token": "t0k"}, task_state={"counter": 7})


def _state(*more: ev.Event) -> JobState:
    return fold(_events(*more))


def test_input_of_a_first_step(renderer: TemplateStepRenderer) -> None:
    assert renderer.input(_state(), "fetch-data") == {"url": "https://example.test/x"}


def test_when_and_input_see_earlier_outputs(renderer: TemplateStepRenderer) -> None:
    state = _state(*_fetched({"ok": True, "rows": [1, 2, 3]}))
    assert renderer.when(state, "check") == (True, True)
    assert renderer.input(state, "check") == {"rows": [1, 2, 3], "label": "rows: 3"}
    falsy = _state(*_fetched({"ok": "no", "rows": []}))
    assert renderer.when(falsy, "check") == (False, "no")


def test_for_each_renders_to_a_list(renderer: TemplateStepRenderer) -> None:
    state = _state(*_fetched({"ok": True, "rows": ["a", "b"]}))
    assert renderer.for_each(state, "fan") == ["a", "b"]
    assert renderer.for_each(state, "literal") == ["https://example.test/x", 2, {"k": 5}]


def test_for_each_accepts_a_json_array_string(renderer: TemplateStepRenderer) -> None:
    state = _state(*_fetched({"ok": True, "rows": '["a", "b"]'}))
    assert renderer.for_each(state, "fan") == ["a", "b"]


def test_for_each_that_is_not_a_list_is_an_error(renderer: TemplateStepRenderer) -> None:
    state = _state(*_fetched({"ok": True, "rows": {"a": 1}}))
    with pytest.raises(RenderError) as info:
        renderer.for_each(state, "fan")
    assert info.value.where == "task deploy, step fan, for_each"
    assert "must render to a list" in str(info.value)
    with pytest.raises(RenderError, match=re.escape("the string 'https://example.test/x'")):
        renderer.for_each(state, "bad")


def _expanded(statuses: list[str]) -> list[ev.Event]:
    items = tuple(f"row{i}" for i in range(len(statuses)))
    out: list[ev.Event] = [*_fetched({"ok": True, "rows": list(items)}),
                           ev.LoopExpanded(ts=T, step="fan", items=items)]
    for i, status in enumerate(statuses):
        name = f"fan[{i}]"
        if status == "pending":
            continue
        out.append(ev.StepReady(ts=T, step=name, input={}))
        out.append(ev.StepStarted(ts=T, step=name, attempt=1, worker_id="w1"))
        if status == "completed":
            out.append(ev.StepCompleted(ts=T, step=name, output={"i": i}))
        else:
            out.append(ev.StepFailed(ts=T, step=name, error="exit 1", exit_code=1))
    return out


def test_a_loop_instance_sees_each_and_job(renderer: TemplateStepRenderer) -> None:
    state = _state(*_expanded(["pending", "pending", "pending"]))
    assert renderer.input(state, "fan[1]") == {
        "row": "row1", "pos": "1/3", "who": "deploy@ops",
    }


def test_a_placeholder_output_lists_instance_outputs(renderer: TemplateStepRenderer) -> None:
    state = _state(*_expanded(["completed", "failed", "completed"]),
                   ev.StepCompleted(ts=T, step="fan", output=None))
    assert renderer.when(state, "after") == (True, True)
    assert renderer.input(state, "after") == {
        "all": [{"i": 0}, None, {"i": 2}], "status": "completed", "st": 7, "token": "t0k",
    }


def test_errors_name_the_step_field_and_missing_name(renderer: TemplateStepRenderer) -> None:
    state = _state()
    with pytest.raises(RenderError) as info:
        renderer.input(state, "bad")
    assert info.value.where == "task deploy, step bad, input.x"
    assert info.value.name == "input.nme"
    assert "'input.nme' is undefined" in str(info.value)
    with pytest.raises(RenderError) as info:
        renderer.when(state, "bad")
    assert info.value.name == "input.missing"
    assert info.value.where == "task deploy, step bad, when"


def test_a_step_not_yet_run_has_null_output(renderer: TemplateStepRenderer) -> None:
    with pytest.raises(RenderError) as info:
        renderer.input(_state(), "check")
    assert info.value.name == "steps['fetch-data'].output.rows"
    assert "NoneType" in str(info.value)


def test_the_context_follows_the_state(renderer: TemplateStepRenderer) -> None:
    first = _state(*_fetched({"ok": True, "rows": [1]}))
    second = _state(*_fetched({"ok": False, "rows": [1, 2]}))
    assert renderer.input(first, "check")["rows"] == [1]
    assert renderer.input(second, "check")["rows"] == [1, 2]
    assert renderer.when(second, "check") == (False, False)
    assert renderer.input(first, "check")["rows"] == [1]


def test_defaults_give_empty_secrets_and_no_state() -> None:
    state = _state(*_expanded(["completed"]))
    with pytest.raises(RenderError) as info:
        TemplateStepRenderer().input(state, "after")
    assert info.value.name == "state.counter"
    with pytest.raises(RenderError) as info:
        TemplateStepRenderer(task_state={"counter": 1}).input(state, "after")
    assert info.value.name == "secret.token"


def test_an_unknown_step_is_a_render_error(renderer: TemplateStepRenderer) -> None:
    with pytest.raises(RenderError, match="unknown step 'nope'"):
        renderer.input(_state(), "nope")


def test_state_context_names_match_build_context() -> None:
    """The lazily resolved context offers exactly the names and values `build_context`
    lays out: hyphen aliases, a step literally named like an alias winning, reserved
    names never shadowed, and `each` for loop instances."""
    from engine.compiler.step_render import StateContext, StepViews
    from engine.compiler.templating import build_context

    plan = Plan(task="t", steps={
        "a-b": _step("a-b"), "a_b": _step("a_b"), "c-d": _step("c-d"), "x_y": _step("x_y"),
        "x-y": _step("x-y"), "job": _step("job"), "in-put": _step("in-put"),
    })
    created = ev.JobCreated(ts=T, job_id="j", workspace="w", revision="r", task="t",
                            input={"k": 1}, plan=plan.to_dict())
    state = fold([created, ev.JobStarted(ts=T)])
    views = StepViews(state)
    job = {"id": "j", "task": "t", "workspace": "w", "revision": "r"}
    lazy = StateContext(views, {"input": state.input, "secret": {"s": 1}, "steps": views,
                                "state": None, "job": job})
    eager = build_context(input=state.input, secret={"s": 1}, steps=views, job=job,
                          state=None)
    assert list(lazy) == list(eager)
    assert len(lazy) == len(eager)
    for key in eager:
        assert key in lazy
        assert lazy[key] == eager[key], key
    assert lazy["a_b"] is views["a_b"] and lazy["c_d"] is views["c-d"]
    assert lazy["x_y"] is views["x_y"]
    assert "in_put" in lazy and "nope" not in lazy
    with pytest.raises(KeyError):
        lazy["nope"]
    each = lazy.adding("each", {"item": 1})
    assert each["each"] == {"item": 1} and "each" not in lazy
