"""Core decisions of job composition: child jobs, task state, hooks and queued jobs."""

from __future__ import annotations

import pytest
from coretest_support import Job, step, types

from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.state import JobStatus, StepStatus, evolve, fold
from engine.errors import Conflict, InvalidTransition


def _running(job: Job, name: str = "a") -> int:
    attempt = job.state.steps[name].attempt
    job.do(cmd.Claim(step=name, attempt=attempt, worker_id="orchestrator", lease="l"))
    return attempt


def test_a_running_task_step_records_its_child() -> None:
    job = Job(step("a", action_type="task"))
    attempt = _running(job)
    events = job.do(cmd.StartChild(step="a", attempt=attempt, child_job_id="child-1"))
    assert types(events) == ["ChildJobStarted"]
    assert job.state.steps["a"].child_job_id == "child-1"
    assert job.state.children == ("child-1",)
    with pytest.raises(Conflict):
        job.do(cmd.StartChild(step="a", attempt=attempt + 1, child_job_id="child-2"))


def test_a_step_saves_the_task_state_while_running_only() -> None:
    job = Job(step("a"))
    with pytest.raises(InvalidTransition):
        job.do(cmd.SaveState(step="a", attempt=1, state={"n": 1}))
    attempt = _running(job)
    assert types(job.do(cmd.SaveState(step="a", attempt=attempt, state={"n": 1}))) == [
        "TaskStateSaved"]
    assert job.state.saved_state == {"n": 1}
    loaded = evolve(job.state, ev.TaskStateLoaded(ts=0, state={"n": 0}))
    assert loaded.task_state == {"n": 0}


def test_hooks_are_recorded_once_even_after_the_job_ended() -> None:
    job = Job(step("a"))
    job.run("a")
    assert job.state.status is JobStatus.COMPLETED
    assert types(job.do(cmd.RecordHook(hook="on_success[0]", job_id="h1"))) == ["HookFired"]
    assert job.do(cmd.RecordHook(hook="on_success[0]", job_id="h2")) == []
    assert job.state.hooks_fired == ("on_success[0]",)
    assert job.do(cmd.Tick()) == []


def test_a_queued_job_waits_until_started_and_can_be_cancelled() -> None:
    job = Job(step("a"), step("b", depends_on=["a"]), start=False)
    job.state = evolve(job.state, ev.JobQueued(ts=0, reason="limit"))
    assert job.state.queued and job.do(cmd.Tick()) == []
    assert job.state.status is JobStatus.PENDING
    events = job.do(cmd.Start())
    assert types(events) == ["JobStarted", "StepReady"]
    assert not job.state.queued

    other = Job(step("a"), start=False)
    other.state = evolve(other.state, ev.JobQueued(ts=0, reason="limit"))
    assert types(other.do(cmd.Cancel(by="x"))) == [
        "JobCancelRequested", "StepCancelled", "JobCancelled"]
    assert other.state.steps["a"].status is StepStatus.CANCELLED


def test_only_a_pending_job_can_be_queued() -> None:
    job = Job(step("a"))
    with pytest.raises(InvalidTransition):
        fold([ev.JobQueued(ts=0, reason="late")], job.state)
