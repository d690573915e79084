"""Shared test helpers: free ports, optional resources, PostgreSQL databases, servers.

Import from any test as `from harness import …` (tests/conftest.py puts this folder on
`sys.path`). Fixtures wrapping these helpers live in tests/conftest.py.

- `require()` skips a test whose resource (PostgreSQL, Chromium) is missing, or fails it
  when `PARTITUR_REQUIRE_ALL=1` (CI), so a missing resource can never pass silently.
- `PgAdmin` creates and drops real databases on the test PostgreSQL.
- `ServerProcess` runs `python -m server.cli serve` as a real subprocess on a free port.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIRE_ALL_ENV = "PARTITUR_REQUIRE_ALL"
PG_ENV = "PARTITUR_TEST_PG"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
CHROMIUM_ENV = "PARTITUR_CHROMIUM"
CHROMIUM_DEFAULT = "/usr/bin/chromium"

T = TypeVar("T")


# --- ports and optional resources ---------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def require_all() -> bool:
    """True when every optional resource must be present (`PARTITUR_REQUIRE_ALL=1`)."""
    return os.environ.get(REQUIRE_ALL_ENV, "").strip().lower() in ("1", "true", "yes")


def require(resource: str, available: bool, reason: str) -> None:
    """Skip the current test when `resource` is missing; fail instead under REQUIRE_ALL."""
    if available:
        return
    message = f"{resource} unavailable: {reason}"
    if require_all():
        pytest.fail(f"{message} ({REQUIRE_ALL_ENV}=1 turns this skip into a failure)")
    pytest.skip(message)


def chromium_executable() -> str:
    """The Chromium the browser tests use: $PARTITUR_CHROMIUM or /usr/bin/chromium."""
    return os.environ.get(CHROMIUM_ENV) or CHROMIUM_DEFAULT


# --- PostgreSQL ----------------------------------------------------------------------


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def pg_base_url() -> str:
    """The admin URL of the test PostgreSQL ($PARTITUR_TEST_PG or the local default)."""
    return os.environ.get(PG_ENV) or PG_DEFAULT


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead of its own."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def redact_url(url: str) -> str:
    """`url` with its password hidden, for skip reasons and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":•••@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PgAdmin:
    """Creates and drops databases on the test server through an admin connection."""

    def __init__(self, base_url: str, *, timeout: float = 3.0) -> None:
        self.base_url = base_url
        self.timeout = timeout

    async def _execute(self, *statements: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.base_url, timeout=self.timeout)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def _run(self, *statements: str) -> None:
        run_sync(self._execute(*statements))

    def unreachable_reason(self) -> str | None:
        """None when the server answers, else why not (connection refused, auth…)."""
        try:
            self._run("SELECT 1")
        except Exception as exc:
            return f"{redact_url(self.base_url)}: {type(exc).__name__}: {exc}"
        return None

    def create(self, name: str, *, template: str | None = None) -> str:
        """Create database `name` (optionally as a copy of `template`); return its URL."""
        statement = f"CREATE DATABASE {_quote_ident(name)}"
        if template is not None:
            statement += f" TEMPLATE {_quote_ident(template)}"
        self._run(statement)
        return with_database(self.base_url, name)

    def drop(self, name: str) -> None:
        """Drop database `name`, disconnecting whoever is still connected to it."""
        self._run(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def exists(self, name: str) -> bool:
        """Whether database `name` exists."""

        async def check() -> bool:
            import asyncpg

            conn = await asyncpg.connect(self.base_url, timeout=self.timeout)
            try:
                found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            finally:
                await conn.close()
            return bool(found == 1)

        return run_sync(check())


@dataclass(frozen=True, slots=True)
class PgTemplate:
    """The per-session template database every `pg_url` database is copied from."""

    admin: PgAdmin
    name: str
    url: str


def random_name(prefix: str) -> str:
    """`prefix` plus a random suffix, safe as an unquoted PostgreSQL identifier."""
    return f"{prefix}_{secrets.token_hex(6)}"


# --- server processes ----------------------------------------------------------------


class ServerStartError(RuntimeError):
    """The server did not become healthy; the message carries the end of its log."""


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class ServerProcess:
    """`partitur serve` as a real subprocess with its own config, database and log file.

    `workspaces` maps a name to a folder (str/Path) or a full workspace entry (`{git: …}`).
    `settings` is merged over the generated config (SQLite and logs inside `tmp_dir`,
    listen on 127.0.0.1 and a free port, two local workers). `env` adds environment
    variables; inherited `PARTITUR__*` variables are dropped so a developer's shell
    cannot change what a test runs against.
    """

    def __init__(
        self,
        tmp_dir: Path,
        *,
        workspaces: Mapping[str, str | Path | Mapping[str, Any]] | None = None,
        settings: Mapping[str, Any] | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.config_path = self.tmp_dir / "server-config.yaml"
        self.log_path = self.tmp_dir / "server.log"
        self.start_timeout = start_timeout
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{self.port}",
            "db": {"url": f"sqlite:///{self.tmp_dir / 'partitur.db'}"},
            "logs": {"dir": str(self.tmp_dir / "logs")},
            "workers": {"local": {"concurrency": 2}},
            "workspaces": {
                name: {"path": str(src)} if isinstance(src, str | Path) else dict(src)
                for name, src in (workspaces or {}).items()
            },
        }
        self.config = _deep_merge(config, settings or {})
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False), "utf-8")

    # -- addresses --

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """`ws://127.0.0.1:<port>`."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The pid of the running server process."""
        if self.process is None:
            raise RuntimeError("the server is not started")
        return self.process.pid

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            sys.executable, "-m", "server.cli", "serve",
            "--config", str(self.config_path), "--port", str(self.port),
        ]

    # -- lifecycle --

    def start(self) -> ServerProcess:
        """Start the process and wait until GET /healthz answers 200."""
        if self.running():
            raise RuntimeError("the server is already running")
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PARTITUR__")}
        env.update({"PYTHONUNBUFFERED": "1", **self.extra_env})
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start #{self.starts}: {' '.join(self.command())}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.tmp_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Poll /healthz until it answers 200; raise ServerStartError with the log tail."""
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        last = "no answer yet"
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise ServerStartError(self._failure(f"the server exited with code {code}"))
                try:
                    response = client.get(f"{self.url}/healthz")
                    if response.status_code == 200:
                        return
                    last = f"/healthz answered {response.status_code}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.05)
        self._kill_group()
        raise ServerStartError(self._failure(f"not healthy after {timeout or self.start_timeout}s"
                                             f" ({last})"))

    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send `sig` and wait for the exit; return the exit code.

        If the process outlives `timeout`, it is killed and TimeoutError is raised (a
        server that ignores SIGTERM is a bug the test should see).
        """
        if self.process is None:
            raise RuntimeError("the server was never started")
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                raise TimeoutError(
                    self._failure(f"did not exit within {timeout}s of signal {sig}")
                ) from None
        return self.process.returncode

    def kill(self) -> int:
        """SIGKILL the server process alone (a crash): its step processes live on."""
        if self.process is None:
            raise RuntimeError("the server was never started")
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait(10)

    def restart(self, *, sig: int = signal.SIGTERM, timeout: float = 15.0) -> ServerProcess:
        """Stop (if running) and start again with the same config, database and port."""
        if self.running():
            self.stop(sig, timeout)
        return self.start()

    def close(self) -> None:
        """Teardown: stop gracefully if possible, then make sure nothing is left."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group()

    def _kill_group(self) -> None:
        # The server runs in its own session; kill whatever is left of its group too.
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            pass

    # -- logs --

    def log_text(self) -> str:
        """Everything the server wrote to stdout/stderr so far (all starts)."""
        try:
            return self.log_path.read_text("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _failure(self, what: str) -> str:
        return f"{what}; config {self.config_path}; server log tail:\n{self.log_tail()}"

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
