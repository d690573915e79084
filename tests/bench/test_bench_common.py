"""The benchmark harness's own pieces: statistics and the generated workspaces."""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import (
    Context,
    chain_yaml,
    fan_yaml,
    foreach_yaml,
    make_workspace,
    nearest_rank,
    spread,
)
from engine.compiler.validate import report


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert nearest_rank(values, 50) == 50.0
    assert nearest_rank(values, 95) == 95.0
    assert nearest_rank([3.0, 1.0, 2.0], 50) == 2.0
    assert nearest_rank([7.0], 95) == 7.0
    assert spread([3.0, 1.0, 2.0]) == {"min": 1.0, "median": 2.0, "max": 3.0}


def test_summary_carries_limit_and_ratio() -> None:
    ctx = Context("sqlite", quick=True)
    ctx.limits["W0.x"] = 0.5
    for rep, value in enumerate([1.0, 2.0, 3.0]):
        ctx.rep("W9", "W9.x", "wall_s", rep, value, "s")
    s = ctx.summary("W9", "W9.x", "wall_s", "s", limit="W0.x")
    assert (s["min"], s["median"], s["max"], s["ratio"]) == (1.0, 2.0, 3.0, 4.0)
    rate = ctx.summary("W9", "W9.x", "wall_s", "1/s", limit="W0.x", higher_is_better=True)
    assert rate["ratio"] == 0.25


def test_generated_workspaces_are_valid(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path, {"chain": chain_yaml("chain5", 5),
                                   "fan": fan_yaml("explicit5", 5),
                                   "loop": foreach_yaml("foreach5", 5)})
    text, code = report(ws)
    assert code == 0, text
