"""Records the golden event streams in tests/fixtures/streams/ (run by hand).

Each scenario drives a job through the real `decide` and writes its events (as a store
holds them: type, schema_version, data, ts) together with the projections they give.
`test_replay.py` replays them. Re-run this only when a change of the event schema or of
the decisions is intended, and review the diff:

    .venv/bin/python tests/core/make_stream_fixtures.py
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coretest_support import Job, step

from engine.core import commands as cmd
from engine.core import events as ev
from engine.core.plan import Retry
from engine.core.projections import job_row, step_rows

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "streams"


def linear_success() -> Job:
    job = Job(step("fetch", input={"url": "$input.url"}),
              step("build", depends_on=["fetch"], input={"src": "$steps.fetch.output"}),
              input={"url": "https://example.com"}, now=1000.0)
    job.do(cmd.Claim(step="fetch", attempt=1, worker_id="w1", lease="L1"), 1001.0)
    job.do(cmd.MarkStarted(step="fetch", attempt=1, worker_id="w1", pid=4242), 1001.5)
    job.do(cmd.RecordOutput(step="fetch", attempt=1, output={"partial": True}), 1002.0)
    job.do(cmd.Complete(step="fetch", attempt=1, output={"bytes": 12}), 1003.0)
    job.do(cmd.Claim(step="build", attempt=1, worker_id="w2", lease="L2"), 1004.0)
    job.do(cmd.Complete(step="build", attempt=1, output="ok"), 1005.0)
    return job


def retry_then_success() -> Job:
    retry = Retry(max_attempts=3, delay=5.0, backoff="exponential")
    job = Job(step("flaky", retry=retry), now=2000.0)
    job.do(cmd.Claim(step="flaky", attempt=1, worker_id="w1", lease="L1"), 2001.0)
    job.do(cmd.Fail(step="flaky", attempt=1, error="exit code 1", exit_code=1), 2002.0)
    job.do(cmd.Tick(), 2007.0)
    job.do(cmd.Claim(step="flaky", attempt=2, worker_id="w1", lease="L2"), 2008.0)
    job.do(cmd.Fail(step="flaky", attempt=2, error="lost", kind="timeout"), 2009.0)
    job.do(cmd.Tick(), 2019.0)
    job.do(cmd.Claim(step="flaky", attempt=3, worker_id="w2", lease="L3"), 2020.0)
    job.do(cmd.Complete(step="flaky", attempt=3, output={"tries": 3}), 2021.0)
    return job


def sequential_loop_failure() -> Job:
    job = Job(step("items"),
              step("each", depends_on=["items"], for_each="$steps.items.output",
                   sequential=True, input={"item": "$each.item"}),
              step("report", depends_on=["each"]),
              step("cleanup", depends_on=["each"], continue_on_failure=True),
              now=3000.0)
    job.run("items", ["a", "b", "c"], now=3001.0)
    job.run("each[0]", "A", now=3002.0)
    job.do(cmd.Claim(step="each[1]", attempt=1, worker_id="w1", lease="L"), 3003.0)
    job.do(cmd.Fail(step="each[1]", attempt=1, error="bad item b", exit_code=2), 3004.0)
    job.run("cleanup", None, now=3005.0)
    return job


def cancel_running() -> Job:
    job = Job(step("long"), step("waiting"), step("after", depends_on=["long"]),
              now=4000.0)
    job.do(cmd.Claim(step="long", attempt=1, worker_id="w1", lease="L"), 4001.0)
    job.do(cmd.Cancel(by="ann", reason="not needed"), 4002.0)
    job.do(cmd.CancelStep(step="long", attempt=1, reason="not needed"), 4003.0)
    return job


def approval_and_when() -> Job:
    job = Job(step("gate", action_type="approval"),
              step("prod", depends_on=["gate"], when="$input.prod"),
              step("staging", depends_on=["gate"], when="$input.staging"),
              step("notify", depends_on=["prod", "staging"]),
              input={"prod": "false", "staging": True}, now=5000.0)
    job.do(cmd.Claim(step="gate", attempt=1, worker_id="approval", lease="L"), 5000.0)
    job.do(cmd.Suspend(step="gate", attempt=1, message="ship it?", timeout_at=8600.0),
           5000.0)
    job.do(cmd.Approve(step="gate", by="ann", input={"ticket": "OPS-1"}), 5100.0)
    job.run("staging", "deployed", now=5200.0)
    job.run("notify", "sent", now=5300.0)
    return job


def job_timeout() -> Job:
    job = Job(step("slow"), step("next", depends_on=["slow"]), timeout=60.0, now=6000.0)
    job.do(cmd.Claim(step="slow", attempt=1, worker_id="w1", lease="L"), 6001.0)
    job.do(cmd.Tick(), 6060.0)
    job.do(cmd.CancelStep(step="slow", attempt=1, reason="job timed out after 60s"), 6061.0)
    return job


SCENARIOS: dict[str, Callable[[], Job]] = {
    "linear_success": linear_success,
    "retry_then_success": retry_then_success,
    "sequential_loop_failure": sequential_loop_failure,
    "cancel_running": cancel_running,
    "approval_and_when": approval_and_when,
    "job_timeout": job_timeout,
}


def record(job: Job) -> dict[str, Any]:
    events = []
    for event in job.events:
        type_, schema_version, data = ev.encode(event)
        events.append({"type": type_, "schema_version": schema_version, "data": data,
                       "ts": event.ts})
    return {
        "events": events,
        "job": job_row(job.state).to_dict(),
        "steps": [row.to_dict() for row in step_rows(job.state)],
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, scenario in SCENARIOS.items():
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(record(scenario()), indent=1) + "\n")
        print(path)


if __name__ == "__main__":
    main()
