"""Numbered schema migrations shipped as `.sql` files (DESIGN §5).

Each backend keeps its migrations in `engine/store/sql/<backend>/NNN_name.sql`. This
module finds and orders them and checks that the numbering has no gap or duplicate; the
backend applies the pending ones at `open()` and records each in its `schema_migrations`
table, in the same transaction as the migration itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigInvalid, StoreUnavailable

SQL_DIR = Path(__file__).parent / "sql"
_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: its number, its name (from the file name) and its SQL."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(backend: str, folder: Path | None = None) -> list[Migration]:
    """The migrations of `backend` in order; raises `ConfigInvalid` on bad numbering."""
    where = folder if folder is not None else SQL_DIR / backend
    found: list[Migration] = []
    for path in sorted(where.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ConfigInvalid(f"migration file {path.name!r} is not named NNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ConfigInvalid(
                f"{backend} migrations must be numbered 1, 2, 3…; found {migration.version} "
                f"where {expected} was expected"
            )
    return found


def pending(migrations: list[Migration], applied: dict[int, str]) -> list[Migration]:
    """The migrations not yet applied, given `{version: checksum}` of the applied ones.

    Raises `StoreUnavailable` when the database was migrated by a newer Partitur (it has a
    version this one does not know) or when an applied migration's file has changed.
    """
    known = {m.version: m for m in migrations}
    for version, checksum in applied.items():
        migration = known.get(version)
        if migration is None:
            raise StoreUnavailable(
                f"the database has schema migration {version}, which this version of "
                "Partitur does not know; upgrade Partitur"
            )
        if checksum != migration.checksum:
            raise StoreUnavailable(
                f"schema migration {version:03d}_{migration.name} changed after it was applied"
            )
    return [m for m in migrations if m.version not in applied]
