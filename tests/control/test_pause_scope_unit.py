"""The operations stream fold: workspace and task pauses, who did it, resume."""

from __future__ import annotations

from engine.core import events as ev
from engine.opspause import OpsState, fold_ops, is_ops_stream, ops_stream


def test_pauses_fold_into_holds_with_who_and_why() -> None:
    state = fold_ops("main", [
        ev.ScopePaused(ts=1.0, workspace="main", task="sync", by="alice", reason="upgrade"),
    ])
    assert state.version == 1
    assert state.reason("sync") == "task sync paused by alice: upgrade"
    assert state.reason("other") is None
    assert state.view("sync")["paused_scope"] == "task"
    state = fold_ops("main", [ev.ScopePaused(ts=2.0, workspace="main", by="bob")], state)
    # The workspace pause holds every task, and is named first.
    assert state.reason("other") == "workspace main paused by bob"
    assert state.view()["paused_tasks"] == {
        "sync": {"paused_by": "alice", "paused_at": 1.0, "reason": "upgrade"}}
    state = fold_ops("main", [ev.ScopeResumed(ts=3.0, workspace="main", by="bob")], state)
    assert state.reason("other") is None
    assert state.reason("sync") == "task sync paused by alice: upgrade"
    state = fold_ops("main", [ev.ScopeResumed(ts=4.0, workspace="main", task="sync")], state)
    assert state == OpsState("main", version=4, paused=None, tasks={})
    assert state.view("sync") == {"paused": False, "paused_by": None}


def test_events_round_trip_and_streams_are_named_per_workspace() -> None:
    event = ev.ScopePaused(ts=1.0, workspace="main", task=None, by="alice", reason=None)
    assert ev.decode(*ev.encode(event), ts=1.0) == event
    assert ops_stream("main") == "ops/main"
    assert is_ops_stream("ops/main") and not is_ops_stream("0190aaaa-job")
