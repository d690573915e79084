"""RateLimiter windows, rate_limit keys and the `rate_limit` YAML model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.core.events import JobCreated
from engine.core.plan import Plan
from engine.core.state import evolve
from engine.model import StepSpec
from engine.ratelimit import Limit, RateLimiter, base_step, render_key


async def test_a_sliding_window_admits_limit_starts_per_period() -> None:
    rates = RateLimiter()
    limit = Limit("k", per=60.0, limit=2)
    assert await rates.reserve(limit, 0.0) is None
    assert await rates.reserve(limit, 10.0) is None
    # The third start must wait until the first one leaves the window.
    assert await rates.reserve(limit, 20.0) == 60.0
    assert await rates.reserve(limit, 59.9) == 60.0
    assert await rates.reserve(limit, 60.0) is None
    assert await rates.reserve(limit, 61.0) == 70.0
    # Another key has its own window.
    assert await rates.reserve(Limit("other", per=60.0, limit=1), 61.0) is None


def test_waiting_steps_are_reported_per_job() -> None:
    rates = RateLimiter()
    rates.waiting[("job-1", "call")] = 5.0
    rates.waiting[("job-2", "call")] = 7.0
    assert rates.until("job-1") == {"call": 5.0}


def _state(inp: dict[str, object]) -> object:
    return evolve(None, JobCreated(ts=1.0, job_id="j1", workspace="ws", revision="r",
                                   task="sync", input=inp,
                                   plan=Plan(task="sync", steps={}).to_dict()))


def test_keys_render_with_the_job_input_or_default_to_the_step() -> None:
    state = _state({"customer": "acme"})
    assert render_key("<< input.customer >>", state, "call") == "ws/key:acme"  # type: ignore[arg-type]
    assert render_key(None, state, "call") == "ws/sync/call"  # type: ignore[arg-type]
    assert base_step("call[12]") == "call" and base_step("call") == "call"


def test_the_model_reads_rate_limit_on_steps() -> None:
    step = StepSpec.model_validate({"type": "shell", "script": "true",
                                    "rate_limit": {"key": "api", "per": "1m", "limit": 5}})
    assert step.rate_limit is not None
    assert (step.rate_limit.key, step.rate_limit.per, step.rate_limit.limit) == ("api", 60.0, 5)
    for bad in ({"per": "1m", "limit": 0}, {"per": 0, "limit": 1}, {"per": "1m"}):
        with pytest.raises(ValidationError):
            StepSpec.model_validate({"type": "shell", "script": "true", "rate_limit": bad})
