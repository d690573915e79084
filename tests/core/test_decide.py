"""Unit tests of the core decisions: one rule of DESIGN §4 per test."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
from coretest_support import Job, PlainRenderer, created, step, types

from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.decide import Env, advance, decide, decide_state, dispatchable, next_wakeup
from engine.core.plan import Retry
from engine.core.state import JobStatus, StepStatus, fold
from engine.errors import Conflict, InvalidTransition, NotFound

# --- start, ready, complete ----------------------------------------------------------


def test_start_readies_roots_in_plan_order_with_rendered_input() -> None:
    job = Job(step("a", input={"x": "$input.n"}), step("b"), step("c", depends_on=["a"]),
              input={"n": 5})
    assert types(job.events[1:]) == ["JobStarted", "StepReady", "StepReady"]
    ready = job.events[2]
    assert isinstance(ready, ev.StepReady)
    assert (ready.step, ready.input, ready.attempt) == ("a", {"x": 5}, 1)
    assert job.state.status is JobStatus.RUNNING
    assert dispatchable(job.state) == ["a", "b"]
    assert job.status("c") == "pending"


def test_decide_does_not_mutate_and_is_repeatable() -> None:
    job = Job(step("a"), step("b", depends_on=["a"]))
    before = job.state
    claim = cmd.Claim(step="a", attempt=1, worker_id="w", lease="l")
    first = decide(job.state, claim, 1.0, job.env)
    assert decide(job.state, claim, 1.0, job.env) == first
    assert job.state is before and job.status("a") == "ready"


def test_complete_readies_dependents_with_the_output_and_completes_the_job() -> None:
    job = Job(step("a"), step("b", depends_on=["a"], input={"got": "$steps.a.output"}))
    job.do(cmd.Claim(step="a", attempt=1, worker_id="w1", lease="L1"), now=1.0)
    assert job.state.steps["a"].worker_id == "w1" and job.state.steps["a"].lease == "L1"
    job.do(cmd.MarkStarted(step="a", attempt=1, worker_id="w1", pid=42))
    job.do(cmd.RecordOutput(step="a", attempt=1, output={"partial": 1}))
    assert job.state.steps["a"].output == {"partial": 1}
    events = job.do(cmd.Complete(step="a", attempt=1, output={"v": 1}), now=2.0)
    assert types(events) == ["StepCompleted", "StepReady"]
    assert job.state.steps["b"].input == {"got": {"v": 1}}
    events = job.run("b", output="done", now=3.0)
    assert types(events) == ["StepCompleted", "JobCompleted"]
    assert job.state.status is JobStatus.COMPLETED
    assert job.state.output == {"b": "done"}
    assert dispatchable(job.state) == [] and next_wakeup(job.state) is None


def test_mark_started_may_follow_ready_directly() -> None:
    job = Job(step("a"))
    events = job.do(cmd.MarkStarted(step="a", attempt=1, worker_id="local", pid=7))
    assert types(events) == ["StepStarted"]
    assert job.status("a") == "running" and job.state.steps["a"].pid == 7


def test_empty_plan_completes_on_start() -> None:
    job = Job()
    assert types(job.events[1:]) == ["JobStarted", "JobCompleted"]
    assert job.state.output == {}


def test_advance_starts_a_pending_job_and_tick_does_too() -> None:
    job = Job(step("a"), start=False)
    assert types(advance(job.state, 1.0, job.env)) == ["JobStarted", "StepReady"]
    assert types(job.do(cmd.Tick(), now=1.0)) == ["JobStarted", "StepReady"]


def test_start_twice_is_an_invalid_transition() -> None:
    job = Job(step("a"))
    with pytest.raises(InvalidTransition):
        job.do(cmd.Start())


def test_job_output_is_the_leaves_without_skipped_ones() -> None:
    job = Job(step("a"), step("b", depends_on=["a"]), step("c", depends_on=["a"], when=False))
    job.run("a", 1)
    job.run("b", 2)
    assert job.state.status is JobStatus.COMPLETED
    assert job.state.output == {"b": 2}


def test_commands_are_frozen_keyword_only_values() -> None:
    complete = cmd.Complete(step="a", attempt=1)
    with pytest.raises(FrozenInstanceError):
        complete.step = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cmd.Claim("a", 1, "w", "l")  # type: ignore[call-arg]
    assert cmd.Approve(step="a").input == {}


# --- domain errors -------------------------------------------------------------------


def test_complete_of_a_step_that_is_not_running_is_a_conflict() -> None:
    job = Job(step("a"))
    with pytest.raises(InvalidTransition) as info:
        job.do(cmd.Complete(step="a", attempt=1, output=None))
    assert isinstance(info.value, Conflict)
    assert "cannot go from ready to completed" in str(info.value)


def test_stale_attempt_is_a_conflict() -> None:
    job = Job(step("a", max_attempts=2))
    job.fail("a")
    assert job.status("a") == "ready" and job.state.steps["a"].attempt == 2
    with pytest.raises(Conflict, match="stale attempt"):
        job.do(cmd.Complete(step="a", attempt=1, output=None))
    with pytest.raises(Conflict, match="stale attempt"):
        job.do(cmd.Claim(step="a", attempt=1, worker_id="w", lease="l"))


def test_unknown_step_is_not_found() -> None:
    job = Job(step("a"))
    with pytest.raises(NotFound):
        job.do(cmd.Claim(step="zzz", attempt=1, worker_id="w", lease="l"))


def test_a_second_claim_is_refused() -> None:
    job = Job(step("a"))
    job.do(cmd.Claim(step="a", attempt=1, worker_id="w1", lease="l1"))
    with pytest.raises(InvalidTransition):
        job.do(cmd.Claim(step="a", attempt=1, worker_id="w2", lease="l2"))


def test_commands_on_a_loop_placeholder_are_refused() -> None:
    job = Job(step("loop", for_each=[1, 2]))
    with pytest.raises(Conflict, match="is a loop"):
        job.do(cmd.Complete(step="loop", attempt=0, output=None))


@pytest.mark.parametrize("command", [
    cmd.Start(), cmd.Cancel(), cmd.Claim(step="a", attempt=1, worker_id="w", lease="l"),
    cmd.Approve(step="a"),
])
def test_commands_on_a_terminal_job_raise(command: cmd.Command) -> None:
    job = Job(step("a"))
    job.run("a")
    assert job.state.status is JobStatus.COMPLETED
    with pytest.raises(InvalidTransition, match="job already completed"):
        job.do(command)


def test_tick_on_a_terminal_job_is_empty() -> None:
    job = Job(step("a"))
    job.do(cmd.Cancel())
    assert job.do(cmd.Tick(), now=100.0) == []
    assert advance(job.state, 100.0, job.env) == []


# --- skip rules ----------------------------------------------------------------------


def test_when_false_skips_with_the_rendered_value() -> None:
    job = Job(step("a", when="$input.go"), input={"go": "no"})
    skipped = job.events[2]
    assert isinstance(skipped, ev.StepSkipped)
    assert skipped.reason == "when was false (rendered: 'no')"
    # A skipped leaf is left out of the job output.
    assert job.state.status is JobStatus.COMPLETED and job.state.output == {}


def test_when_true_readies() -> None:
    job = Job(step("a", when="$input.go"), input={"go": "yes"})
    assert job.status("a") == "ready"


def test_when_render_error_fails_the_step_without_retry() -> None:
    job = Job(step("a", when="$input.missing", max_attempts=3), step("b", depends_on=["a"]))
    failed = job.state.steps["a"]
    assert failed.status is StepStatus.FAILED and failed.error_kind == "render"
    assert "missing" in (failed.error or "")
    assert job.state.steps["b"].skip_reason == "dependency a failed"
    assert job.state.status is JobStatus.FAILED
    assert job.state.error == f"step a failed: {failed.error}"


def test_input_render_error_fails_the_step() -> None:
    job = Job(step("a", input={"x": "$steps.nope.output"}, max_attempts=3))
    assert job.status("a") == "failed"
    assert job.state.steps["a"].error_kind == "render"
    assert job.state.steps["a"].error == "step a, input.x: 'nope' is undefined"


def test_failed_dependency_skips_dependents_transitively() -> None:
    job = Job(step("a"), step("b", depends_on=["a"]), step("c", depends_on=["b"]))
    events = job.fail("a")
    assert types(events) == ["StepFailed", "StepSkipped", "StepSkipped", "JobFailed"]
    assert job.state.steps["b"].skip_reason == "dependency a failed"
    assert job.state.steps["c"].skip_reason == "all dependencies were skipped"
    assert job.state.error == "step a failed: boom"


def test_continue_on_failure_of_the_dependent_lets_it_run_but_the_job_fails() -> None:
    job = Job(step("a"), step("b", depends_on=["a"], continue_on_failure=True))
    job.fail("a")
    assert job.status("b") == "ready"
    job.run("b", "ok")
    assert job.state.status is JobStatus.FAILED
    assert job.state.error == "step a failed: boom"


def test_continue_on_failure_of_the_failed_step_covers_it() -> None:
    job = Job(step("a", continue_on_failure=True), step("b", depends_on=["a"]))
    job.fail("a")
    assert job.status("b") == "ready"
    job.run("b", "ok")
    assert job.state.status is JobStatus.COMPLETED
    assert job.state.output == {"b": "ok"}


def test_covered_failed_leaf_is_in_the_output_as_null() -> None:
    job = Job(step("a", continue_on_failure=True))
    job.fail("a")
    assert job.state.status is JobStatus.COMPLETED and job.state.output == {"a": None}


def test_a_skipped_dependency_counts_as_satisfied_when_branches_converge() -> None:
    job = Job(step("a"), step("b", when=False), step("c", depends_on=["a", "b"]))
    assert job.status("b") == "skipped" and job.status("c") == "pending"
    job.run("a")
    assert job.status("c") == "ready"


def test_all_dependencies_skipped_skips() -> None:
    job = Job(step("a", when=False), step("b", when=0), step("c", depends_on=["a", "b"]))
    assert job.state.steps["c"].skip_reason == "all dependencies were skipped"


def test_waits_until_every_dependency_is_terminal() -> None:
    job = Job(step("a"), step("b", when=False), step("c", depends_on=["a", "b"]))
    job.do(cmd.Claim(step="a", attempt=1, worker_id="w", lease="l"))
    assert job.status("c") == "pending"


def test_cancelled_dependency_skips() -> None:
    job = Job(step("a"), step("b", depends_on=["a"]), step("c"))
    job.do(cmd.Claim(step="a", attempt=1, worker_id="w", lease="l"))
    events = job.do(cmd.CancelStep(step="a", attempt=1))
    assert types(events) == ["StepCancelled", "StepSkipped"]
    assert job.state.steps["b"].skip_reason == "dependency a was cancelled"
    job.run("c")
    # A step cancelled without a job cancel fails the job.
    assert job.state.status is JobStatus.FAILED
    assert job.state.error == "step a was cancelled"


def test_cancelled_dependency_with_continue_on_failure_runs() -> None:
    job = Job(step("a"), step("b", depends_on=["a"], continue_on_failure=True))
    job.do(cmd.Claim(step="a", attempt=1, worker_id="w", lease="l"))
    job.do(cmd.CancelStep(step="a", attempt=1, reason="killed"))
    assert job.status("b") == "ready"
    assert job.state.steps["a"].error == "killed"


# --- loops ---------------------------------------------------------------------------


def test_for_each_expands_and_instances_get_each() -> None:
    job = Job(step("loop", for_each=["x", "y"], input={"it": "$each.item", "i": "$each.index",
                                                        "n": "$each.total"}))
    assert types(job.events[1:]) == ["JobStarted", "LoopExpanded", "StepReady", "StepReady"]
    assert job.status("loop") == "running"
    assert dispatchable(job.state) == ["loop[0]", "loop[1]"]
    assert job.state.steps["loop[1]"].input == {"it": "y", "i": 1, "n": 2}
    job.run("loop[1]", "Y")
    assert job.status("loop") == "running"
    events = job.run("loop[0]", "X")
    assert types(events) == ["StepCompleted", "StepCompleted", "JobCompleted"]
    assert job.state.steps["loop"].output == ["X", "Y"]
    assert job.state.output == {"loop": ["X", "Y"]}


def test_instances_follow_their_placeholder_in_dispatch_order() -> None:
    job = Job(step("loop", for_each=[1, 2]), step("z"))
    assert dispatchable(job.state) == ["loop[0]", "loop[1]", "z"]


def test_for_each_empty_skips() -> None:
    job = Job(step("loop", for_each="$input.items"), input={"items": []})
    assert job.state.steps["loop"].skip_reason == "for_each is empty"


def test_for_each_over_the_limit_fails() -> None:
    env = Env(renderer=PlainRenderer(), max_loop_items=2)
    job = Job(step("loop", for_each=[1, 2, 3]), env=env)
    assert job.status("loop") == "failed"
    assert job.state.steps["loop"].error == "for_each yields 3 items; the limit is 2"


def test_for_each_render_error_fails() -> None:
    job = Job(step("loop", for_each="$input.items"))
    assert job.status("loop") == "failed"
    assert job.state.steps["loop"].error_kind == "render"


def test_loop_is_not_expanded_when_its_when_is_false() -> None:
    renderer = PlainRenderer()
    job = Job(step("loop", for_each=[1], when=False), env=Env(renderer=renderer))
    assert job.status("loop") == "skipped"
    assert ("for_each", "loop") not in renderer.calls


def test_failed_instance_fails_the_loop() -> None:
    job = Job(step("loop", for_each=[1, 2]), step("after", depends_on=["loop"]))
    job.fail("loop[0]", "bad item")
    assert job.status("loop") == "running"
    events = job.run("loop[1]")
    assert types(events) == ["StepCompleted", "StepFailed", "StepSkipped", "JobFailed"]
    assert job.state.steps["loop"].error == "instance loop[0] failed: bad item"
    assert job.state.error == "step loop failed: instance loop[0] failed: bad item"


def test_loop_with_continue_on_failure_completes_with_nulls() -> None:
    job = Job(step("loop", for_each=[1, 2], continue_on_failure=True))
    job.fail("loop[0]")
    job.run("loop[1]", "two")
    assert job.state.steps["loop"].output == [None, "two"]
    assert job.state.status is JobStatus.COMPLETED


def test_sequential_loop_runs_in_order() -> None:
    job = Job(step("loop", for_each=["a", "b", "c"], sequential=True))
    assert dispatchable(job.state) == ["loop[0]"]
    job.run("loop[0]")
    assert dispatchable(job.state) == ["loop[1]"]


def test_sequential_loop_stops_after_a_failure() -> None:
    job = Job(step("loop", for_each=["a", "b", "c"], sequential=True))
    events = job.fail("loop[0]")
    assert types(events) == ["StepFailed", "StepSkipped", "StepSkipped", "StepFailed",
                             "JobFailed"]
    assert job.state.steps["loop[1]"].skip_reason == "an earlier instance failed"
    assert job.state.steps["loop[2]"].skip_reason == "an earlier instance failed"


def test_sequential_loop_with_continue_on_failure_goes_on() -> None:
    job = Job(step("loop", for_each=["a", "b"], sequential=True, continue_on_failure=True))
    job.fail("loop[0]")
    assert dispatchable(job.state) == ["loop[1]"]


def test_cancelled_instance_cancels_the_loop() -> None:
    job = Job(step("loop", for_each=[1, 2]))
    job.do(cmd.Claim(step="loop[0]", attempt=1, worker_id="w", lease="l"))
    job.do(cmd.Cancel(by="ann"))
    assert job.status("loop[1]") == "cancelled" and job.status("loop") == "running"
    events = job.do(cmd.CancelStep(step="loop[0]", attempt=1))
    assert types(events) == ["StepCancelled", "StepCancelled", "JobCancelled"]
    assert job.state.steps["loop"].error == "instance loop[0] was cancelled"


# --- retries -------------------------------------------------------------------------


def test_retry_is_scheduled_with_delay_and_jitter() -> None:
    retry = Retry(max_attempts=3, delay=10.0, backoff="exponential", jitter=0.5)
    job = Job(step("a", retry=retry), env=Env(renderer=PlainRenderer(), rand=lambda: 0.5))
    events = job.fail("a", now=100.0)
    assert types(events) == ["StepFailed", "StepRetryScheduled"]
    scheduled = events[1]
    assert isinstance(scheduled, ev.StepRetryScheduled)
    assert (scheduled.attempt, scheduled.at) == (2, 100.0 + 10.0 * 1.25)
    assert job.status("a") == "pending" and next_wakeup(job.state) == 112.5
    # Not yet due.
    assert job.do(cmd.Tick(), now=112.0) == []
    events = job.do(cmd.Tick(), now=112.5)
    assert types(events) == ["StepReady"]
    assert job.state.steps["a"].attempt == 2
    events = job.fail("a", now=200.0)
    assert isinstance(events[1], ev.StepRetryScheduled)
    assert (events[1].attempt, events[1].at) == (3, 200.0 + 20.0 * 1.25)
    job.do(cmd.Tick(), now=300.0)
    # The third attempt was the last one.
    events = job.fail("a")
    assert types(events) == ["StepFailed", "JobFailed"]
    assert job.state.steps["a"].attempt == 3


def test_retry_without_delay_readies_at_once() -> None:
    job = Job(step("a", max_attempts=2), step("b", depends_on=["a"]))
    events = job.fail("a")
    assert types(events) == ["StepFailed", "StepRetryScheduled", "StepReady"]
    assert job.status("b") == "pending"


def test_retried_step_does_not_reevaluate_when() -> None:
    renderer = PlainRenderer()
    job = Job(step("a", when=True, max_attempts=2), env=Env(renderer=renderer))
    job.fail("a")
    assert renderer.calls.count(("when", "a")) == 1
    assert renderer.calls.count(("input", "a")) == 2


@pytest.mark.parametrize(("kind", "on_lost", "retried"), [
    ("error", False, True), ("timeout", False, True), ("render", False, False),
    ("rejected", False, False), ("worker_lost", False, False), ("worker_lost", True, True),
])
def test_which_failures_are_retried(kind: str, on_lost: bool, retried: bool) -> None:
    job = Job(step("a", retry=Retry(max_attempts=2, on_lost=on_lost)))
    events = job.fail("a", kind=kind)
    assert ("StepRetryScheduled" in types(events)) is retried


def test_fail_of_a_ready_step_is_allowed() -> None:
    job = Job(step("a"))
    events = job.do(cmd.Fail(step="a", attempt=1, error="no runner", exit_code=None))
    assert types(events) == ["StepFailed", "JobFailed"]


# --- approvals -----------------------------------------------------------------------


def test_approval_suspends_and_approve_completes() -> None:
    job = Job(step("ok", action_type="approval"), step("b", depends_on=["ok"]))
    job.do(cmd.Suspend(step="ok", attempt=1, message="deploy?"))
    assert job.status("ok") == "suspended" and job.state.steps["ok"].message == "deploy?"
    events = job.do(cmd.Approve(step="ok", by="ann", input={"n": 1}), now=5.0)
    assert types(events) == ["StepApproved", "StepReady"]
    assert job.state.steps["ok"].output["approved_by"] == "ann"


def test_reject_fails_without_retry() -> None:
    job = Job(step("ok", max_attempts=3))
    job.do(cmd.Claim(step="ok", attempt=1, worker_id="w", lease="l"))
    job.do(cmd.Suspend(step="ok", attempt=1))
    events = job.do(cmd.Reject(step="ok", by="bob", reason="no"))
    assert types(events) == ["StepRejected", "JobFailed"]
    assert job.state.error == "step ok failed: rejected: no"


def test_approve_of_a_step_that_is_not_suspended_is_refused() -> None:
    job = Job(step("ok"))
    with pytest.raises(InvalidTransition):
        job.do(cmd.Approve(step="ok"))
    with pytest.raises(InvalidTransition):
        job.do(cmd.Reject(step="ok"))


def test_approval_timeout_fails_the_step() -> None:
    job = Job(step("ok"))
    job.do(cmd.Suspend(step="ok", attempt=1, timeout_at=60.0))
    assert next_wakeup(job.state) == 60.0
    assert job.do(cmd.Tick(), now=59.0) == []
    events = job.do(cmd.Tick(), now=60.0)
    assert types(events) == ["StepFailed", "JobFailed"]
    assert job.state.steps["ok"].error_kind == "timeout"


# --- cancel and job timeout ----------------------------------------------------------


def test_cancel_cancels_waiting_steps_and_waits_for_running_ones() -> None:
    job = Job(step("a"), step("b"), step("c", depends_on=["a"]), step("d"))
    job.do(cmd.Claim(step="a", attempt=1, worker_id="w", lease="l"))
    job.do(cmd.Claim(step="d", attempt=1, worker_id="w", lease="l"))
    job.do(cmd.Suspend(step="d", attempt=1))
    events = job.do(cmd.Cancel(by="ann", reason="stop"))
    assert types(events) == ["JobCancelRequested", "StepCancelled", "StepCancelled",
                             "StepCancelled"]
    assert {e.step for e in events if isinstance(e, ev.StepCancelled)} == {"b", "c", "d"}
    assert job.status("a") == "running" and job.state.cancelled_by == "ann"
    # A second cancel changes nothing.
    assert job.do(cmd.Cancel()) == []
    events = job.do(cmd.CancelStep(step="a", attempt=1))
    assert types(events) == ["StepCancelled", "JobCancelled"]
    assert job.state.status is JobStatus.CANCELLED and job.state.error == "stop"


def test_a_running_step_may_still_complete_after_a_cancel_but_nothing_new_starts() -> None:
    job = Job(step("a", max_attempts=3), step("b", depends_on=["a"]))
    job.do(cmd.Claim(step="a", attempt=1, worker_id="w", lease="l"))
    job.do(cmd.Cancel())
    events = job.do(cmd.Fail(step="a", attempt=1, error="killed"))
    # No retry is scheduled for a cancelled job.
    assert types(events) == ["StepFailed", "JobCancelled"]
    assert job.state.error == "cancelled"


def test_cancel_of_a_pending_job() -> None:
    job = Job(step("a"), start=False)
    events = job.do(cmd.Cancel())
    assert types(events) == ["JobCancelRequested", "StepCancelled", "JobCancelled"]
    assert job.state.started_at is None


def test_cancel_during_a_retry_wait() -> None:
    job = Job(step("a", retry=Retry(max_attempts=2, delay=30.0)))
    job.fail("a")
    assert next_wakeup(job.state) == 30.0
    job.do(cmd.Cancel())
    assert job.state.status is JobStatus.CANCELLED


def test_job_timeout_cancels_the_job() -> None:
    job = Job(step("a"), step("b"), timeout=60.0, now=10.0)
    job.do(cmd.Claim(step="a", attempt=1, worker_id="w", lease="l"))
    assert next_wakeup(job.state) == 70.0
    assert job.do(cmd.Tick(), now=69.0) == []
    events = job.do(cmd.Tick(), now=70.0)
    assert types(events) == ["JobCancelRequested", "StepCancelled"]
    assert job.state.cancel_reason == "job timed out after 60s"
    assert next_wakeup(job.state) is None
    job.do(cmd.CancelStep(step="a", attempt=1, reason="job timed out after 60s"))
    assert job.state.status is JobStatus.CANCELLED
    assert job.state.error == "job timed out after 60s"


def test_job_deadline_of_a_pending_job_counts_from_creation() -> None:
    job = Job(step("a"), timeout=5.0, now=1.0, start=False)
    assert next_wakeup(job.state) == 6.0


def test_next_wakeup_is_the_earliest_of_retries_approvals_and_deadline() -> None:
    job = Job(step("a", retry=Retry(max_attempts=2, delay=50.0)), step("b"), timeout=500.0)
    job.fail("a")
    job.do(cmd.Suspend(step="b", attempt=1, timeout_at=20.0))
    assert next_wakeup(job.state) == 20.0


def test_fold_of_the_decided_events_is_the_kept_state() -> None:
    job = Job(step("a"), step("loop", for_each=[1, 2], depends_on=["a"]))
    job.run("a")
    job.run("loop[0]")
    job.run("loop[1]")
    assert job.state.status is JobStatus.COMPLETED
    assert fold(job.events) == job.state
    assert fold([created(step("a"))]).status is JobStatus.PENDING


def test_decide_state_is_the_fold_of_the_events_on_every_path() -> None:
    # A hook recorded once, a step's whole life, the job's end, a Tick after the end.
    job = Job(step("a"), step("b", depends_on=["a"]))
    for command in (cmd.RecordHook(hook="h", job_id=job.state.job_id),
                    cmd.RecordHook(hook="h", job_id=job.state.job_id)):
        events, state = decide_state(job.state, command, 1.0, job.env)
        assert state == fold(events, job.state)
        job.do(command)
    assert job.state.hooks_fired == ("h",)
    job.run("a")
    job.run("b")
    assert job.state.terminal
    events, state = decide_state(job.state, cmd.Tick(), 2.0, job.env)
    assert events == [] and state is job.state
