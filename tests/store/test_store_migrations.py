"""Finding, ordering and checking numbered migrations; splitting SQLite scripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigInvalid, StoreUnavailable
from engine.store.migrations import Migration, load_migrations, pending
from engine.store.sqlite import split_statements


def write(folder: Path, **files: str) -> Path:
    folder.mkdir(exist_ok=True)
    for name, sql in files.items():
        (folder / name).write_text(sql)
    return folder


def test_shipped_sqlite_migrations_are_numbered_from_one() -> None:
    found = load_migrations("sqlite")
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "init"


def test_migrations_load_in_numeric_order(tmp_path: Path) -> None:
    folder = write(tmp_path / "m", **{"002_more.sql": "B;", "001_init.sql": "A;"})
    assert [(m.version, m.name) for m in load_migrations("x", folder)] == [
        (1, "init"), (2, "more")
    ]


@pytest.mark.parametrize(
    "files",
    [
        {"001_a.sql": "", "003_c.sql": ""},
        {"001_a.sql": "", "001_b.sql": ""},
        {"1-a.sql": ""},
    ],
)
def test_bad_numbering_is_refused(tmp_path: Path, files: dict[str, str]) -> None:
    with pytest.raises(ConfigInvalid):
        load_migrations("x", write(tmp_path / "m", **files))


def test_pending_skips_applied_and_refuses_changed_or_unknown() -> None:
    one, two = Migration(1, "a", "A;"), Migration(2, "b", "B;")
    assert pending([one, two], {1: one.checksum}) == [two]
    assert pending([one, two], {}) == [one, two]
    with pytest.raises(StoreUnavailable, match="changed"):
        pending([one, two], {1: "other"})
    with pytest.raises(StoreUnavailable, match="does not know"):
        pending([one], {1: one.checksum, 2: two.checksum})


def test_split_statements_keeps_trigger_bodies_whole() -> None:
    script = """
-- a comment
CREATE TABLE t (x INTEGER);
CREATE TRIGGER tr AFTER INSERT ON t BEGIN
    UPDATE t SET x = x + 1;
END;
INSERT INTO t VALUES (';');
-- trailing comment
"""
    statements = split_statements(script)
    assert len(statements) == 3
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")
    with pytest.raises(ConfigInvalid):
        split_statements("CREATE TABLE u (x INTEGER)")
