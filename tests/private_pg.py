"""A throw-away PostgreSQL server of a test's own, to stop and start (a real restart).

`private_postgres()` runs `initdb` into a temporary folder and starts the server on a
free port (its socket in that folder too), so stopping it disturbs no other test using
the shared PostgreSQL on 5432. Import as `from private_pg import …` (tests/ is on
`sys.path`); a missing `initdb`/`pg_ctl` goes through `harness.require`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import free_port, require


class PrivatePostgres:
    """A throw-away PostgreSQL server: its own data folder, port and socket folder."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self.bin = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def init(self) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chown", "postgres:postgres", str(self.root)], check=True)
        done = self._as_postgres(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                                 "-U", "postgres", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off")
        done = self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w",
                                 "-l", str(self.root / "server.log"), "-o", options, "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}")

    def stop(self) -> None:
        done = self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w",
                                 "-m", "fast", "stop")
        if done.returncode != 0 and "not running" not in done.stderr:
            raise RuntimeError(f"pg_ctl stop failed: {done.stderr.strip()}")


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private server, stopped and removed on exit."""
    have = Path("/usr/lib/postgresql").is_dir() and (
        os.geteuid() != 0 or shutil.which("runuser") is not None)
    require("postgres", have, "PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # Not under pytest's temp folder: the server runs as `postgres`, which must reach it.
    root = Path(tempfile.mkdtemp(prefix="partitur-pg-"))
    server = PrivatePostgres(root, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
