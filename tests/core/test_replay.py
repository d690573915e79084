"""Golden replays: recorded streams in tests/fixtures/streams/ give their recorded
projections, and corrupted copies of them are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from make_stream_fixtures import SCENARIOS, record

from engine.core import events as ev
from engine.core.projections import job_row, step_rows
from engine.core.state import JobState, fold
from engine.errors import InvalidTransition

STREAMS = Path(__file__).resolve().parents[1] / "fixtures" / "streams"
FIXTURES = sorted(STREAMS.glob("*.json"))
TERMINAL_JOB_EVENTS = {"JobCompleted", "JobFailed", "JobCancelled"}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _replay(events: list[dict[str, Any]]) -> JobState:
    return fold(ev.decode(e["type"], e["schema_version"], e["data"], e["ts"]) for e in events)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def test_there_is_a_fixture_per_scenario() -> None:
    assert {p.stem for p in FIXTURES} == set(SCENARIOS)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_replay_gives_the_recorded_projections(path: Path) -> None:
    fixture = _load(path)
    state = _replay(fixture["events"])
    assert state.version == len(fixture["events"])
    assert _json(job_row(state).to_dict()) == fixture["job"]
    assert _json([row.to_dict() for row in step_rows(state)]) == fixture["steps"]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_decisions_still_record_the_same_stream(path: Path) -> None:
    assert _json(record(SCENARIOS[path.stem]())) == _load(path)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_stream_without_its_first_event_is_refused(path: Path) -> None:
    with pytest.raises(InvalidTransition):
        _replay(_load(path)["events"][1:])


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_job_end_moved_before_the_start_is_refused(path: Path) -> None:
    events = _load(path)["events"]
    end = next(i for i, e in enumerate(events) if e["type"] in TERMINAL_JOB_EVENTS)
    moved = [events[0], events[end], *events[1:end], *events[end + 1:]]
    with pytest.raises(InvalidTransition):
        _replay(moved)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_claim_moved_after_the_step_ended_is_refused(path: Path) -> None:
    events = _load(path)["events"]
    claim = next(i for i, e in enumerate(events) if e["type"] == "StepClaimed")
    name = events[claim]["data"]["step"]
    end = next(i for i, e in enumerate(events) if i > claim and e["data"].get("step") == name
               and e["type"] in {"StepCompleted", "StepFailed", "StepCancelled",
                                 "StepApproved"})
    moved = [*events[:claim], *events[claim + 1:end + 1], events[claim], *events[end + 1:]]
    with pytest.raises(InvalidTransition):
        _replay(moved)


def test_a_retry_stream_without_its_retry_event_is_refused() -> None:
    events = _load(STREAMS / "retry_then_success.json")["events"]
    retry = next(i for i, e in enumerate(events) if e["type"] == "StepRetryScheduled")
    with pytest.raises(InvalidTransition, match="cannot go from failed to ready"):
        _replay(events[:retry] + events[retry + 1:])


def test_a_loop_stream_without_its_expansion_is_refused() -> None:
    events = _load(STREAMS / "sequential_loop_failure.json")["events"]
    kept = [e for e in events if e["type"] != "LoopExpanded"]
    with pytest.raises(InvalidTransition, match="unknown step"):
        _replay(kept)
