"""Properties of decide/evolve over random DAGs driven by random command orders.

Each example builds a random plan (1–12 steps, dependencies on earlier steps, `when`
true/false, `continue_on_failure`, retries, loops of 0–3 items, sequential loops, some
render errors, sometimes a job timeout) and then plays a random order of the commands a
real orchestrator and its workers could send, with an advancing fake clock.
"""

from __future__ import annotations

from typing import Any

from coretest_support import Job, step
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.decide import _advance, dependencies, dispatchable, next_wakeup
from engine.core.plan import PlanStep, Retry
from engine.core.state import JobState, JobStatus, StepStatus, evolve, fold
from engine.errors import Conflict

S = StepStatus
MAX_COMMANDS = 1000
STARTING = (ev.StepReady, ev.StepClaimed, ev.StepStarted, ev.LoopExpanded)


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[PlanStep], float | None]:
    count = draw(st.integers(1, 12))
    steps: list[PlanStep] = []
    for i in range(count):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        for_each = draw(st.one_of(st.none(), st.none(), st.lists(st.integers(0, 9),
                                                                   max_size=3)))
        retry = Retry(max_attempts=draw(st.integers(1, 3)),
                      delay=draw(st.sampled_from([0.0, 0.0, 5.0])),
                      on_lost=draw(st.booleans()))
        steps.append(step(
            f"s{i}",
            depends_on=[f"s{d}" for d in deps],
            when=draw(st.sampled_from([None, None, None, True, False])),
            for_each=for_each,
            sequential=for_each is not None and draw(st.booleans()),
            continue_on_failure=draw(st.booleans()),
            retry=retry,
            input=draw(st.sampled_from([{}, {}, {}, {}, {"x": "$input.missing"}])),
        ))
    timeout = draw(st.sampled_from([None, None, None, 150.0]))
    return steps, timeout


def _options(state: JobState) -> list[tuple[str, str]]:
    """The commands that make sense now, as (kind, step)."""
    options: list[tuple[str, str]] = [("claim", name) for name in dispatchable(state)]
    if state.paused:
        options.append(("resume", ""))
    for name, current in state.steps.items():
        if current.status is S.RUNNING and current.items is None:
            options += [("complete", name), ("fail", name), ("lost", name), ("suspend", name),
                        ("start", name)]
            if state.cancel_requested:
                options.append(("cancel_step", name))
        elif current.status is S.SUSPENDED:
            options += [("approve", name), ("reject", name)]
        if current.attempt > 1 and current.status in (S.READY, S.RUNNING):
            options.append(("stale", name))
    return options


def _command(kind: str, name: str, state: JobState, now: float) -> cmd.Command:
    attempt = state.steps[name].attempt if name else 0
    match kind:
        case "claim":
            return cmd.Claim(step=name, attempt=attempt, worker_id="w", lease=f"L{attempt}")
        case "start":
            return cmd.MarkStarted(step=name, attempt=attempt, worker_id="w", pid=7, at=now)
        case "complete":
            return cmd.Complete(step=name, attempt=attempt, output={"from": name})
        case "fail":
            return cmd.Fail(step=name, attempt=attempt, error="exit 1", exit_code=1)
        case "lost":
            return cmd.Fail(step=name, attempt=attempt, error="lost", kind="worker_lost")
        case "suspend":
            return cmd.Suspend(step=name, attempt=attempt, timeout_at=now + 20.0)
        case "approve":
            return cmd.Approve(step=name, by="ann")
        case "reject":
            return cmd.Reject(step=name, by="bob")
        case "cancel_step":
            return cmd.CancelStep(step=name, attempt=attempt)
        case "cancel":
            return cmd.Cancel(by="ann")
        case "pause":
            return cmd.Pause(by="ann")
        case "resume":
            return cmd.Resume(by="ann")
    return cmd.Tick()


def _check_event(before: JobState, after: JobState, event: ev.Event) -> None:
    """No step starts before its dependencies ended; terminal states absorb."""
    if isinstance(event, STARTING):
        current = before.steps[event.step]
        # A pause stops claims; a step claimed before it still gets its start recorded.
        claimed = isinstance(event, ev.StepStarted) and current.status is S.RUNNING
        assert claimed or not before.paused, (
            f"{event.type} of {event.step} while the job is paused")
        waiting = [d for d in dependencies(before, current) if not before.steps[d].terminal]
        assert not waiting, f"{event.type} of {event.step} while {waiting} are not done"
        if current.loop_of is not None:
            assert before.steps[current.loop_of].status is S.RUNNING
    for name, old in before.steps.items():
        new = after.steps[name]
        if old.terminal and new.status is not old.status:
            assert isinstance(event, ev.StepRetryScheduled) and event.step == name
            assert (old.status, new.status) == (S.FAILED, S.PENDING)
    assert after.version == before.version + 1
    _check_counters(after)


def _check_counters(state: JobState) -> None:
    """The counters evolve keeps agree with the steps they count."""
    assert state.open_steps == sum(not s.terminal for s in state.steps.values())
    assert state.waiting == sum(s.waits for s in state.steps.values())
    for current in state.steps.values():
        if current.items is not None:
            open_instances = sum(not i.terminal for i in state.instances(current.name))
            assert current.open_instances == open_instances, current.name


def _check_end(job: Job) -> None:
    state = job.state
    assert state.terminal, f"job did not end: {job.statuses()}"
    assert all(s.terminal for s in state.steps.values()), job.statuses()
    assert next_wakeup(state) is None and dispatchable(state) == []
    # Replaying the log, also through its stored encoding, gives the state kept along.
    assert fold(job.events) == state
    assert fold(ev.decode(*ev.encode(e), ts=e.ts) for e in job.events) == state
    for name, current in state.steps.items():
        plan_step = state.plan_step(name)
        assert current.attempt <= plan_step.retry.max_attempts
        if current.loop_of is None and current.status in (S.COMPLETED, S.READY):
            deps = [state.steps[d] for d in plan_step.depends_on]
            for dep in deps:
                covered = (plan_step.continue_on_failure
                           or state.plan.steps[dep.name].continue_on_failure)
                assert dep.status not in (S.FAILED, S.CANCELLED) or covered
            assert not deps or not all(d.status is S.SKIPPED for d in deps)
        ran = current.status in (S.COMPLETED, S.FAILED)
        if current.loop_of is not None and ran and not plan_step.continue_on_failure:
            # A sequential loop stops at its first failure.
            assert all(state.steps[d].status is S.COMPLETED
                       for d in dependencies(state, current))
    uncovered = [n for n, s in state.steps.items()
                 if (s.status is S.FAILED and not state.plan_step(n).continue_on_failure)
                 or s.status is S.CANCELLED]
    if state.cancel_requested:
        assert state.status is JobStatus.CANCELLED
    elif uncovered:
        assert state.status is JobStatus.FAILED
    else:
        assert state.status is JobStatus.COMPLETED
        assert set(state.output or {}) == {
            leaf for leaf in state.plan.leaves() if state.steps[leaf].status is not S.SKIPPED
        }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans(), data=st.data())
def test_random_runs_end_and_replay_to_the_same_state(
    plan: tuple[list[PlanStep], float | None], data: Any
) -> None:
    steps, timeout = plan
    job = Job(*steps, timeout=timeout)
    for _ in range(MAX_COMMANDS):
        if job.state.terminal:
            break
        options = _options(job.state)
        wake = next_wakeup(job.state)
        now = job.now + data.draw(st.sampled_from([0.0, 1.0, 7.0]))
        if not options:
            # Nothing can run: only time can move the job on, so something must be due.
            assert wake is not None, f"job is stuck: {job.statuses()}"
            kind, name, now = "tick", "", max(now, wake)
        else:
            roll = data.draw(st.sampled_from(["step"] * 40 + ["tick", "tick", "cancel",
                                                              "pause"]))
            if roll == "cancel" and not job.state.cancel_requested:
                kind, name = "cancel", ""
            elif roll == "pause" and not job.state.paused:
                kind, name = "pause", ""
            elif roll != "step":
                kind, name = "tick", ""
            else:
                kind, name = data.draw(st.sampled_from(options))
        if kind == "stale":
            attempt = job.state.steps[name].attempt - 1
            before = job.state
            try:
                job.do(cmd.Complete(step=name, attempt=attempt), now)
            except Conflict as exc:
                assert "stale attempt" in str(exc)
            else:
                raise AssertionError("a stale attempt was accepted")
            assert job.state is before
            continue
        state = job.state
        command = _command(kind, name, state, now)
        count = len(job.events)
        job.do(command, now)
        for new in job.events[count:]:
            after = evolve(state, new)
            _check_event(state, after, new)
            state = after
        assert state == job.state
        if isinstance(command, cmd.Claim | cmd.MarkStarted):
            # Deciding these does not look for promotions: there must be none to find.
            assert _advance(job.state, now, job.env, None) == [], job.statuses()
    _check_end(job)
    event(job.state.status.value)
    event(f"{len(job.events) // 25 * 25}+ events")
