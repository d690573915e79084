"""`partitur rebuild`: the projections rebuilt from the log equal the ones the runs wrote."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

WS = Path(__file__).parent.parent / "fixtures" / "cli_ws"
PASSWORD = "pw-given-9876"


def partitur(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args],
                          capture_output=True, text=True, timeout=120)


def projections(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("jobs", "steps")}


def test_rebuild_equals_the_incremental_projections(tmp_path: Path) -> None:
    db = tmp_path / "kept.db"
    url = f"sqlite:///{db}"
    runs = [("env",), ("fails",), ("typed", "-i", "count=3"),
            ("secret-input", "-i", f"password={PASSWORD}")]
    for task, *extra in runs:
        done = partitur("run", task, "--workspace", str(WS), "--db", url, *extra)
        assert done.returncode in (0, 1), done.stderr
        assert "Traceback" not in done.stderr
    before = projections(db)
    assert len(before["jobs"]) == 4
    # The secret input is masked in the rows the runs wrote...
    assert PASSWORD not in repr(before)

    rebuilt = partitur("rebuild", "--db", url)
    assert rebuilt.returncode == 0, rebuilt.stderr
    match = re.search(r"replayed (\d+) events of (\d+) jobs", rebuilt.stdout)
    assert match is not None, rebuilt.stdout
    assert int(match.group(1)) > 4 * 3 and match.group(2) == "4"
    # ...and in the rebuilt ones, which are equal to them row for row.
    after = projections(db)
    assert after == before
