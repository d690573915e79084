"""How many processes `partitur rebuild` replays a log with when not told."""

from __future__ import annotations

from engine.store.rebuild_shards import MAX_AUTO_WORKERS, MIN_EVENTS_PER_WORKER, auto_workers


def test_one_process_until_the_log_keeps_two_busy() -> None:
    assert auto_workers(0, 8) == 1
    assert auto_workers(2 * MIN_EVENTS_PER_WORKER - 1, 8) == 1
    assert auto_workers(2 * MIN_EVENTS_PER_WORKER, 8) == 2


def test_one_process_per_core_up_to_the_cap() -> None:
    assert auto_workers(10**7, 1) == 1
    assert auto_workers(10**7, 2) == 2
    assert auto_workers(10**7, 64) == MAX_AUTO_WORKERS
