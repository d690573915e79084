"""`engine.explain` on folded job states: each reason, including those that need a
context (workers online, concurrency holders, rate limits), and pause in the core."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from coretest_support import Job, step

from engine.core import commands as cmd
from engine.core.decide import dispatchable
from engine.core.plan import PlanStep
from engine.core.projections import job_row
from engine.errors import Conflict
from engine.explain import ExplainContext, explain


def codes(job: Job, context: ExplainContext | None = None) -> dict[str, str]:
    return {r.step: r.code for r in explain(job.state, context).steps}


def test_ready_step_reasons_come_from_the_context() -> None:
    tagged = PlanStep(name="a", action_name="a", action_type="shell", action={},
                      tags=("gpu", "linux"))
    job = Job(tagged, step("b", depends_on=["a"]))
    assert dispatchable(job.state) == ["a"]
    assert codes(job) == {"a": "waiting_for_worker", "b": "waiting_for_dependency"}
    none_fit = ExplainContext(workers_online=[frozenset({"linux"})])
    reason = explain(job.state, none_fit).steps[0]
    assert reason.code == "no_worker"
    assert reason.reason == "no worker with tags {gpu, linux} is online"
    fits = ExplainContext(workers_online=[frozenset({"gpu", "linux", "x"})])
    assert codes(job, fits)["a"] == "waiting_for_worker"
    held = ExplainContext(step_slot_held_by={"a": ["job-9"]})
    assert explain(job.state, held).steps[0].reason == "concurrency slot held by job job-9"
    limited = ExplainContext(now=100.0, rate_limited_until={"a": 160.0})
    assert explain(job.state, limited).steps[0].reason == \
        "rate limit until 1970-01-01T00:02:40Z"
    assert codes(job, ExplainContext(now=200.0, rate_limited_until={"a": 160.0}))["a"] == \
        "waiting_for_worker"


def test_pause_holds_ready_steps_and_refuses_claims() -> None:
    job = Job(step("a"), step("b", depends_on=["a"]))
    job.do(cmd.Claim(step="a", attempt=1, worker_id="w", lease="L"))
    job.do(cmd.Pause(by="ann", reason="deploy"))
    assert job.state.paused and job_row(job.state).status == "paused"
    # The running step finishes; the next one is not made ready.
    job.do(cmd.Complete(step="a", attempt=1))
    assert job.state.steps["b"].status.value == "pending"
    assert codes(job) == {"b": "job_paused"}
    assert explain(job.state).job_reason == "job paused by ann"
    job.do(cmd.Resume(by="bob"))
    assert dispatchable(job.state) == ["b"]
    job.do(cmd.Pause(by="ann"))
    try:
        job.do(cmd.Claim(step="b", attempt=1, worker_id="w", lease="L2"))
    except Conflict as exc:
        assert "paused" in str(exc)
    else:
        raise AssertionError("a paused job handed out a step")
    assert dispatchable(job.state) == []
    job.do(cmd.Resume())
    job.do(cmd.Claim(step="b", attempt=1, worker_id="w", lease="L2"))
    job.do(cmd.Complete(step="b", attempt=1))
    assert job.state.status.value == "completed"
    assert job_row(job.state).status == "completed"
