"""Decisions with the real template renderer (engine.compiler.step_render)."""

from __future__ import annotations

from coretest_support import Job, step, types

from engine.compiler.step_render import TemplateStepRenderer
from engine.core import commands as cmd
from engine.core.decide import Env, dispatchable
from engine.core.state import JobStatus


def _env(secrets: dict[str, str] | None = None) -> Env:
    return Env(renderer=TemplateStepRenderer(secrets or {}))


def test_input_renders_job_input_outputs_and_secrets() -> None:
    job = Job(
        step("a", input={"n": "<< input.n + 1 >>", "token": "<< secret.token >>"}),
        step("b", depends_on=["a"], input={"got": "<< steps.a.output.v >>",
                                           "short": "got << a.output.v >>"}),
        env=_env({"token": "s3"}), input={"n": 41},
    )
    assert job.state.steps["a"].input == {"n": 42, "token": "s3"}
    job.run("a", {"v": [1, 2]})
    assert job.state.steps["b"].input == {"got": [1, 2], "short": "got [1, 2]"}


def test_when_false_is_skipped_with_the_rendered_value() -> None:
    job = Job(step("a", when="<< input.go >>"), step("b", when="<< input.go == 'yes' >>"),
              env=_env(), input={"go": "no"})
    assert job.state.steps["a"].skip_reason == "when was false (rendered: 'no')"
    assert job.state.steps["b"].skip_reason == "when was false (rendered: False)"
    assert job.state.status is JobStatus.COMPLETED


def test_a_missing_name_fails_the_step_with_a_render_error() -> None:
    job = Job(step("a", input={"x": "<< input.nope >>"}, max_attempts=3), env=_env())
    failed = job.state.steps["a"]
    assert failed.status.value == "failed" and failed.error_kind == "render"
    assert "nope" in (failed.error or "") and "step a" in (failed.error or "")
    assert job.state.status is JobStatus.FAILED


def test_for_each_over_a_previous_output_with_each_in_input() -> None:
    job = Job(
        step("list"),
        step("loop", depends_on=["list"], for_each="<< steps.list.output >>",
             input={"item": "<< each.item >>", "pos": "<< each.index >>/<< each.total >>"}),
        step("sum", depends_on=["loop"], input={"all": "<< steps.loop.output >>"}),
        env=_env(),
    )
    events = job.run("list", ["x", "y"])
    assert types(events) == ["StepCompleted", "LoopExpanded", "StepReady", "StepReady"]
    assert dispatchable(job.state) == ["loop[0]", "loop[1]"]
    assert job.state.steps["loop[1]"].input == {"item": "y", "pos": "1/2"}
    job.run("loop[0]", "X")
    job.do(cmd.Claim(step="loop[1]", attempt=1, worker_id="w", lease="l"))
    job.do(cmd.Fail(step="loop[1]", attempt=1, error="bad"))
    assert job.state.steps["loop"].error == "instance loop[1] failed: bad"
    assert job.state.steps["sum"].skip_reason == "dependency loop failed"


def test_for_each_that_is_not_a_list_fails() -> None:
    job = Job(step("loop", for_each="<< input.n >>"), env=_env(), input={"n": 3})
    assert job.state.steps["loop"].error_kind == "render"
