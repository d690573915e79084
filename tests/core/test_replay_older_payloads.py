"""Streams recorded by earlier versions still replay: events are never rewritten, so
every payload ever written must stay readable (here: plans recorded before the explicit
step `order` was added)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.core import events as ev
from engine.core.projections import job_row, step_rows
from engine.core.state import fold

OLDER = Path(__file__).resolve().parents[1] / "fixtures" / "streams-v0"


@pytest.mark.parametrize("path", sorted(OLDER.glob("*.json")), ids=lambda p: p.stem)
def test_older_streams_replay_to_their_recorded_projections(path: Path) -> None:
    fixture = json.loads(path.read_text())
    assert "order" not in fixture["events"][0]["data"]["plan"]
    state = fold(ev.decode(e["type"], e["schema_version"], e["data"], e["ts"])
                 for e in fixture["events"])
    assert json.loads(json.dumps(job_row(state).to_dict())) == fixture["job"]
    assert json.loads(json.dumps([r.to_dict() for r in step_rows(state)])) == fixture["steps"]
