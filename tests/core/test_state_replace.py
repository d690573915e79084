"""The fast `replace` of `engine.core.state` behaves as `dataclasses.replace`."""

from __future__ import annotations

import dataclasses

import pytest

from engine.core.plan import Plan
from engine.core.state import JobState, JobStatus, StepState, StepStatus, replace


def _job() -> JobState:
    return JobState(job_id="j1", workspace="w", revision="r", task="t", input={"a": 1},
                    plan=Plan.from_dict({"task": "t", "steps": {}}),
                    steps={"s": StepState("s")}, created_at=1.0)


def test_job_replace_equals_dataclasses_replace() -> None:
    job = _job()
    changes = {"status": JobStatus.RUNNING, "version": 7, "last_event_at": 2.5,
               "children": ("c",)}
    fast = replace(job, **changes)
    assert fast == dataclasses.replace(job, **changes)
    assert fast is not job and job.version == 0 and job.status is JobStatus.PENDING
    assert type(fast) is JobState


def test_step_replace_without_changes_is_an_equal_copy() -> None:
    step = StepState("s", status=StepStatus.RUNNING, attempt=2, output={"x": [1]})
    copy = replace(step)
    assert copy == step and copy is not step
    assert replace(step, attempt=3).attempt == 3


def test_replaced_state_stays_frozen() -> None:
    fast = replace(StepState("s"), attempt=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.attempt = 2  # type: ignore[misc]


def test_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError, match="nope"):
        replace(StepState("s"), nope=1)


def test_other_dataclasses_use_the_standard_replace() -> None:
    @dataclasses.dataclass(frozen=True)
    class Other:
        a: int
        b: int = 0

    assert replace(Other(1), b=2) == Other(1, 2)
