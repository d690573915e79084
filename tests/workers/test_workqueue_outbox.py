"""Ready steps for remote workers are queue rows committed with their `StepReady` event.

The work queue is the orchestrator's outbox (DESIGN §4): a process that stops right after
a decision was appended leaves its ready steps queued, without waiting for the sweeper.
"""

from __future__ import annotations

from pathlib import Path

from engine.runtime import Runtime, RuntimeOptions
from engine.store.sqlite import SqliteStore

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "workers_ws"


def _runtime(tmp_path: Path) -> Runtime:
    return Runtime(RuntimeOptions(
        db_url=f"sqlite:///{tmp_path / 'p.db'}", logs_dir=tmp_path / "logs",
        artifacts_dir=tmp_path / "artifacts", workspaces={"w": FIXTURE}, concurrency=0,
        worker_mode="remote"))


async def test_ready_steps_are_queued_in_the_appends_transaction(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    await runtime.open()
    try:
        assert runtime.queue is not None
        job_id = await runtime.orchestrator.create_job("w", "hello", {})
        # Stop queueing at once, as a server dying right after the commit would: no
        # background enqueue was needed, and none is left to cancel.
        assert not runtime.queue._tasks
        await runtime.queue.close()
    finally:
        await runtime.close()
    store = SqliteStore(tmp_path / "p.db")
    await store.open()
    try:
        rows = await store.queued_work(job_id)
    finally:
        await store.close()
    assert [(r.step, r.attempt, r.tags) for r in rows] == [("greet", 1, ())]


async def test_a_claim_completes_and_the_next_step_is_queued_with_it(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    await runtime.open()
    try:
        queue = runtime.queue
        assert queue is not None
        job_id = await runtime.orchestrator.create_job("w", "hello", {})
        worker = await queue.register("w1", ["gpu"], 1)
        first = await queue.claim(worker.worker_id, timeout=1.0)
        assert first is not None and first.step == "greet"
        await queue.started(first.lease, pid=None)
        await queue.result(first.lease, {"status": "completed", "output": {"ok": True}})
        # The completion's decision made `tagged` ready: its row came with the events.
        rows = await runtime.store.queued_work(job_id)
        assert [(r.step, r.tags) for r in rows] == [("greet", ()), ("tagged", ("gpu",))]
        assert not queue._tasks
        second = await queue.claim(worker.worker_id, timeout=1.0)
        assert second is not None and second.step == "tagged"
    finally:
        await runtime.close()
