"""Event encoding, decoding and upcasting, and the evolve cases decisions do not reach."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from coretest_support import Job, created, step

from engine.core import events as ev
from engine.core.plan import Retry
from engine.core.state import JobStatus, StreamCorrupt, evolve, fold
from engine.errors import InvalidTransition


def test_encode_decode_round_trip_turns_tuples_into_lists_and_back() -> None:
    event = ev.LoopExpanded(ts=3.0, step="loop", items=(1, "a"))
    type_, version, data = ev.encode(event)
    assert (type_, version, data) == ("LoopExpanded", 1, {"step": "loop", "items": [1, "a"]})
    assert ev.decode(type_, version, data, 3.0) == event


def test_decode_refuses_unknown_types_newer_versions_and_bad_payloads() -> None:
    with pytest.raises(ev.UnknownEvent, match="unknown event type"):
        ev.decode("Nope", 1, {}, 0.0)
    with pytest.raises(ev.UnknownEvent, match="reads up to 1"):
        ev.decode("JobStarted", 2, {}, 0.0)
    with pytest.raises(ev.UnknownEvent, match="does not match its schema"):
        ev.decode("StepSkipped", 1, {"step": "a"}, 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Renamed(ev.Event):
    """A test event whose payload changed twice."""

    SCHEMA_VERSION = 3
    name: str
    tags: tuple[str, ...] = ()


def test_decode_upcasts_old_payloads_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {"title": data["old"], "tags": data.get("labels")}

    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {"name": data["title"].upper(), "tags": data["tags"]}

    monkeypatch.setitem(ev.EVENT_TYPES, "Renamed", Renamed)
    monkeypatch.setitem(ev.UPCASTERS, ("Renamed", 1), v1_to_v2)
    with pytest.raises(ev.UnknownEvent, match="no upcaster for Renamed v2"):
        ev.decode("Renamed", 1, {"old": "x"}, 1.0)
    monkeypatch.setitem(ev.UPCASTERS, ("Renamed", 2), v2_to_v3)
    assert ev.decode("Renamed", 1, {"old": "x", "labels": ["a"]}, 1.0) == Renamed(
        ts=1.0, name="X", tags=("a",))
    # A null tuple field is left as it is.
    assert ev.decode("Renamed", 3, {"name": "y", "tags": None}, 1.0).tags is None  # type: ignore[attr-defined]


def test_recorded_event_envelope() -> None:
    recorded = ev.RecordedEvent(global_seq=7, stream_id="job-1", version=2,
                                type="StepSkipped", schema_version=1,
                                data={"step": "a", "reason": "r"}, ts=5.0)
    assert recorded.event() == ev.StepSkipped(ts=5.0, step="a", reason="r")
    assert recorded.to_dict()["global_seq"] == 7 and recorded.to_dict()["data"]["step"] == "a"
    assert ev.JobStarted(ts=1.0).type == "JobStarted"


def test_fold_of_nothing_and_streams_not_starting_with_creation_are_refused() -> None:
    with pytest.raises(StreamCorrupt, match="empty stream"):
        fold([])
    with pytest.raises(StreamCorrupt, match="starts with JobCreated"):
        evolve(None, ev.JobStarted(ts=0.0))
    with pytest.raises(StreamCorrupt, match="cannot follow JobCreated"):
        fold([created(step("a")), created(step("a"))])


def test_terminal_job_status_absorbs() -> None:
    job = Job(step("a"))
    state = evolve(job.state, ev.JobFailed(ts=1.0, error="x"))
    with pytest.raises(InvalidTransition, match="cannot go from failed to completed"):
        evolve(state, ev.JobCompleted(ts=2.0))


def test_job_skipped_hooks_callbacks_and_child_jobs() -> None:
    state = fold([created(step("a"))])
    skipped = evolve(state, ev.JobSkipped(ts=1.0, reason="concurrency limit"))
    assert skipped.status is JobStatus.SKIPPED and skipped.error == "concurrency limit"
    state = evolve(state, ev.HookFired(ts=1.0, hook="on_success", job_id="job-2"))
    state = evolve(state, ev.CallbackQueued(ts=1.0, url="https://x", event="job.done",
                                            delivery_id="d1"))
    state = evolve(state, ev.ChildJobStarted(ts=1.0, step="a", child_job_id="child-1"))
    assert state.hooks_fired == ("on_success",)
    assert state.children == ("child-1",) and state.steps["a"].child_job_id == "child-1"
    assert state.version == 4


def test_retry_delay_math() -> None:
    exponential = Retry(max_attempts=5, delay=2.0, backoff="exponential", max_delay=5.0,
                        jitter=1.0)
    assert [exponential.delay_before(n, 0.0) for n in (2, 3, 4)] == [2.0, 4.0, 5.0]
    assert exponential.delay_before(2, 0.5) == 3.0
    assert Retry(delay=3.0).delay_before(4, 0.9) == 3.0


def test_plan_to_dict_is_what_asdict_gives() -> None:
    """The hand-written `to_dict`s (fast: one per step of every new job) keep every
    field, nested data copied, in `dataclasses.asdict`'s order; from_dict reads it back."""
    import dataclasses

    from engine.core.plan import Plan, PlanStep

    retry = Retry(max_attempts=3, delay=1.5, backoff="exponential", max_delay=9.0,
                  jitter=0.1, on_lost=True)
    assert retry.to_dict() == dataclasses.asdict(retry)
    assert list(retry.to_dict()) == [f.name for f in dataclasses.fields(Retry)]
    action = {"script": "x", "env": {"A": ["1", {"b": (2, 3)}]}}
    step_ = PlanStep(name="s", action_name="a", action_type="shell", action=action,
                     input={"i": "<< input.x >>"}, depends_on=("d",), when={"w": [1]},
                     for_each=[1, (2,)], retry=retry, tags=("t",), timeout=4.0)
    expected = dataclasses.asdict(step_)
    expected.update(depends_on=["d"], tags=["t"])
    got = step_.to_dict()
    assert got == expected and list(got) == list(expected)
    assert got["action"] is not action and got["action"]["env"] is not action["env"]
    plan = Plan(task="t", steps={"s": step_}, retry=retry)
    assert Plan.from_dict(plan.to_dict()) == plan
