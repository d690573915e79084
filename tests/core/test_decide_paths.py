"""Paths of the core that the scenario tests do not reach on their own: pausing twice,
claims of a paused job, the plan index cache, and step rows of a growing job."""

from __future__ import annotations

import pytest
from coretest_support import Job, step

from engine.core import commands as cmd
from engine.core import plan as plan_module
from engine.core.projections import job_status, step_rows
from engine.core.state import StepStatus
from engine.errors import Conflict


def test_pause_and_resume_are_idempotent() -> None:
    job = Job(step("a"))
    assert [e.type for e in job.do(cmd.Pause(by="ann"))] == ["JobPaused"]
    assert job.do(cmd.Pause(by="ann")) == []
    assert job_status(job.state) == "paused"
    assert [e.type for e in job.do(cmd.Resume(by="ann"))] == ["JobResumed"]
    assert job.do(cmd.Resume(by="ann")) == []
    assert job_status(job.state) == "running"


def test_a_paused_job_refuses_claims_and_nothing_changes() -> None:
    job = Job(step("a"))
    job.do(cmd.Pause(by="ann"))
    before = job.state
    with pytest.raises(Conflict, match="paused"):
        job.do(cmd.Claim(step="a", attempt=1, worker_id="w", lease="l"))
    assert job.state is before


def test_the_plan_index_is_computed_once_per_plan_and_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    job = Job(step("a"), step("b", depends_on=["a"]))
    plan = job.state.plan
    first = plan_module.plan_index(plan)
    assert plan_module.plan_index(plan) is first
    assert first.dependents["a"] == ("b",) and first.position["b"] == 1
    # A full cache is emptied rather than growing without bound.
    monkeypatch.setattr(plan_module, "_INDEXES", {i: (plan, first) for i in range(4097)})
    again = plan_module.plan_index(plan)
    assert again == first and len(plan_module._INDEXES) == 1


def test_step_rows_of_some_steps_keep_the_positions_of_all_rows() -> None:
    job = Job(step("a"), step("loop", depends_on=["a"], for_each=[1, 2]), step("z"))
    every = {row.step_name: row.position for row in step_rows(job.state)}
    some = step_rows(job.state, {"z", "a"})
    assert [(r.step_name, r.position) for r in some] == [("a", every["a"]), ("z", every["z"])]
    # The loop expands: its instances get rows, with positions after the loop.
    job.run("a")
    assert job.state.steps["loop"].status is StepStatus.RUNNING
    rows = step_rows(job.state, {"loop[1]", "loop[0]"})
    positions = {row.step_name: row.position for row in step_rows(job.state)}
    assert [(r.step_name, r.position) for r in rows] == [
        ("loop[0]", positions["loop[0]"]), ("loop[1]", positions["loop[1]"])]
    assert positions["loop"] < positions["loop[0]"] < positions["loop[1]"]


def test_the_positions_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.core import projections

    job = Job(step("a"), step("b"))
    monkeypatch.setattr(projections, "_POSITIONS",
                        {str(i): (None, 0, {}) for i in range(4097)})
    rows = step_rows(job.state, {"b"})
    assert [(r.step_name, r.position) for r in rows] == [("b", 1)]
    assert list(projections._POSITIONS) == [job.state.job_id]
    # A second call with the same steps is served from the cache.
    assert step_rows(job.state, {"a"})[0].position == 0


def test_positions_are_not_shared_by_two_plans_of_one_job_id() -> None:
    first = Job(step("x"), step("y"))
    assert step_rows(first.state, {"y"})[0].position == 1
    second = Job(step("y"), step("x"))  # the same job id, another plan
    assert step_rows(second.state, {"y"})[0].position == 0
