"""Choose and build the event store a database URL names (`db.url` in the config).

- `memory://` — the in-memory store (tests, throwaway runs);
- `sqlite:///relative/path.db` (relative to `base_dir`, the config file's folder) or
  `sqlite:////absolute/path.db`, with an optional `?synchronous=FULL`;
- `postgresql://…` — the PostgreSQL backend.

The store comes back unopened: the caller awaits `store.open()` (which migrates) and
`store.close()`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from engine.errors import ConfigInvalid
from engine.store.base import EventStore
from engine.store.memory import MemoryStore
from engine.store.sqlite import SqliteStore


def open_store(url: str, *, base_dir: Path | None = None) -> EventStore:
    """The store for `url` (not yet opened); raises `ConfigInvalid` for a bad URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        return MemoryStore()
    if scheme == "sqlite":
        return _sqlite(url, base_dir)
    if scheme in ("postgresql", "postgres"):
        from engine.store.postgres import PostgresStore  # asyncpg is imported only when used

        return PostgresStore(url)
    raise ConfigInvalid(
        f"db.url {_redacted(url)!r}: unknown scheme {parts.scheme!r}; "
        "use memory://, sqlite:///path.db or postgresql://…"
    )


def _sqlite(url: str, base_dir: Path | None) -> SqliteStore:
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigInvalid(
            f"db.url {url!r}: write sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    # urlsplit keeps the leading "/" of the path: "sqlite:///a.db" → "/a.db" (relative),
    # "sqlite:////abs/a.db" → "//abs/a.db" (absolute).
    raw = unquote(parts.path)
    if not raw.startswith("/") or raw == "/":
        raise ConfigInvalid(f"db.url {url!r} names no database file")
    path = Path(raw[1:])
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    options = parse_qs(parts.query)
    unknown = set(options) - {"synchronous"}
    if unknown:
        raise ConfigInvalid(f"db.url {url!r}: unknown option(s) {', '.join(sorted(unknown))}")
    synchronous = options.get("synchronous", ["NORMAL"])[-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path, synchronous=synchronous)


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":•••@", 1)
    return parts._replace(netloc=netloc).geturl()
