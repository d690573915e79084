"""The embedded executor runs ready steps concurrently, never more than its limit."""

from __future__ import annotations

from pathlib import Path

from composition_support import runtime, workspace

from engine.core.state import JobStatus

STEP = """
      s{n}:
        type: shell
        script: |
          start=$(date +%s.%N); sleep 1; end=$(date +%s.%N)
          echo "OUTPUT: {{\\"start\\": $start, \\"end\\": $end}}"
"""
YAML = "tasks:\n  fan:\n    flow:" + "".join(STEP.format(n=n) for n in range(5))


def peak(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one time."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    open_, most = 0, 0
    for _, step in edges:
        open_ += step
        most = max(most, open_)
    return most


async def test_five_ready_steps_run_two_at_a_time(tmp_path: Path) -> None:
    ws = workspace(tmp_path, YAML)
    async with runtime(tmp_path, ws, concurrency=2) as rt:
        job = await rt.orchestrator.create_job("ws", "fan", {})
        state = await rt.orchestrator.wait(job, 60)
        assert state.status is JobStatus.COMPLETED, state.error
        outputs = [state.steps[f"s{n}"].output for n in range(5)]
        intervals = [(o["start"], o["end"]) for o in outputs]
        # All five are independent: two run at once, never three.
        assert peak(intervals) == 2


ONE = """
tasks:
  one:
    flow:
      s:
        type: shell
        script: |
          start=$(date +%s.%N); sleep 0.3; end=$(date +%s.%N)
          echo "OUTPUT: {\\"start\\": $start, \\"end\\": $end}"
"""


async def test_steps_of_different_jobs_never_exceed_the_limit(tmp_path: Path) -> None:
    # A step's slot passes to a waiting step of another job as soon as its process has
    # ended, before its end is recorded: still never more than two processes at once.
    ws = workspace(tmp_path, ONE)
    async with runtime(tmp_path, ws, concurrency=2) as rt:
        jobs = [await rt.orchestrator.create_job("ws", "one", {}) for _ in range(6)]
        states = [await rt.orchestrator.wait(job, 60) for job in jobs]
    assert all(s.status is JobStatus.COMPLETED for s in states), [s.error for s in states]
    intervals = [(s.steps["s"].output["start"], s.steps["s"].output["end"]) for s in states]
    assert peak(intervals) == 2
