"""Self-tests of the shared test harness (tests/harness.py and tests/conftest.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import asyncpg
import harness
import httpx
import pytest
from harness import PgTemplate, ServerProcess, ServerStartError, free_port, require

from server.config import load_settings

TESTS_DIR = Path(__file__).resolve().parent


def run_pytest(
    folder: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run pytest in `folder` with our conftest loaded as a plugin (a real child run)."""
    child_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "PARTITUR_")) and k != "PYTHONPATH"
    }
    child_env["PYTHONPATH"] = str(TESTS_DIR)
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
         "-q", "-rA", *args],
        cwd=folder, env=child_env, capture_output=True, text=True, timeout=50, check=False,
    )


# --- free_port and require ------------------------------------------------------------


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # nothing holds it


def test_require_passes_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITUR_REQUIRE_ALL", "1")
    require("thing", True, "never shown")  # returns without raising


def test_require_skips_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARTITUR_REQUIRE_ALL", raising=False)
    with pytest.raises(pytest.skip.Exception, match="thing unavailable: not installed"):
        require("thing", False, "not installed")


def test_require_fails_under_require_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITUR_REQUIRE_ALL", "1")
    with pytest.raises(pytest.fail.Exception, match="thing unavailable: not installed"):
        require("thing", False, "not installed")


def test_missing_resources_skip_or_fail_in_a_real_run(tmp_path: Path) -> None:
    (tmp_path / "test_needs.py").write_text(
        textwrap.dedent(
            """
            def test_pg(pg_url):
                assert pg_url

            def test_chromium(chromium_path):
                assert chromium_path
            """
        )
    )
    env = {
        "PARTITUR_TEST_PG": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
        "PARTITUR_CHROMIUM": str(tmp_path / "no-chromium"),
    }
    # Without PARTITUR_REQUIRE_ALL a missing resource is a skip with a clear reason.
    relaxed = run_pytest(tmp_path, env=env)
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert "2 skipped" in relaxed.stdout
    assert "PostgreSQL unavailable" in relaxed.stdout
    assert "Chromium unavailable" in relaxed.stdout
    assert "PARTITUR_TEST_PG" in relaxed.stdout
    # With it, the same run fails.
    strict = run_pytest(tmp_path, env={**env, "PARTITUR_REQUIRE_ALL": "1"})
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "2 errors" in strict.stdout
    assert "PARTITUR_REQUIRE_ALL=1" in strict.stdout


def test_fixtures_add_markers(tmp_path: Path) -> None:
    (tmp_path / "test_marked.py").write_text(
        "def test_pg(pg_url):\n    pass\n\ndef test_chromium(chromium_path):\n    pass\n"
    )
    env = {"PARTITUR_TEST_PG": f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"}
    # Deselecting both markers leaves nothing, and an empty run must fail (exit 5).
    result = run_pytest(tmp_path, "-m", "not postgres and not browser", env=env)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "2 deselected" in result.stdout


def test_no_tests_collected_fails() -> None:
    result = run_pytest(TESTS_DIR.parent, "tests/test_harness.py", "-k", "zzz_no_such_test")
    assert result.returncode == 5, result.stdout + result.stderr


def test_tests_dir_is_importable() -> None:
    assert str(TESTS_DIR) in sys.path
    assert Path(harness.__file__).parent == TESTS_DIR


# --- PostgreSQL -----------------------------------------------------------------------


def test_url_helpers() -> None:
    url = "postgresql://u:pw@h:5433/base?sslmode=disable"
    assert harness.with_database(url, "other") == "postgresql://u:pw@h:5433/other?sslmode=disable"
    assert "pw" not in harness.redact_url(url)
    assert harness.redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


async def test_pg_url_is_a_fresh_copy_of_the_template(
    pg_url: str, pg_template: PgTemplate, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("postgres") is not None
    conn = await asyncpg.connect(pg_url, timeout=3)
    try:
        name = await conn.fetchval("SELECT current_database()")
        assert name.startswith("partitur_test_")
        assert name != pg_template.name
        await conn.execute("CREATE TABLE t (x int)")
        await conn.execute("INSERT INTO t VALUES (1)")
        assert await conn.fetchval("SELECT count(*) FROM t") == 1
    finally:
        await conn.close()
    # The admin helpers work from inside a running event loop too.
    assert pg_template.admin.exists(name)
    assert pg_template.admin.exists(pg_template.name)


def test_pg_databases_are_dropped(pg_template: PgTemplate, tmp_path: Path) -> None:
    # A child run uses pg_url and reports its database names; afterwards both are gone.
    report = tmp_path / "names.txt"
    (tmp_path / "test_child.py").write_text(
        textwrap.dedent(
            f"""
            import asyncio, asyncpg

            def test_child(pg_url, pg_template):
                async def probe():
                    conn = await asyncpg.connect(pg_url, timeout=3)
                    try:
                        return await conn.fetchval("SELECT current_database()")
                    finally:
                        await conn.close()
                name = asyncio.run(probe())
                open({str(report)!r}, "w").write(name + "\\n" + pg_template.name)
            """
        )
    )
    result = run_pytest(tmp_path, env={"PARTITUR_TEST_PG": pg_template.admin.base_url})
    assert result.returncode == 0, result.stdout + result.stderr
    test_db, template_db = report.read_text().split("\n")
    assert test_db.startswith("partitur_test_") and template_db.startswith("partitur_tpl_")
    assert not pg_template.admin.exists(test_db)
    assert not pg_template.admin.exists(template_db)


def test_pg_admin_create_and_drop(pg_template: PgTemplate) -> None:
    admin = pg_template.admin
    name = harness.random_name("partitur_test")
    url = admin.create(name, template=pg_template.name)
    try:
        assert url.endswith(f"/{name}")
        assert admin.exists(name)

        async def hold_open() -> None:
            # DROP … WITH (FORCE) must succeed even with a client still connected.
            conn = await asyncpg.connect(url, timeout=3)
            try:
                admin.drop(name)
            finally:
                conn.terminate()

        asyncio.run(hold_open())
        assert not admin.exists(name)
    finally:
        admin.drop(name)


# --- ServerProcess (against a stand-in process; the real CLI is tested elsewhere) ----

STAND_IN = textwrap.dedent(
    """
    import http.server, os, signal, sys

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = str(os.getpid()).encode()
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            print("request", self.path, flush=True)

    def on_term(*_):
        print("got SIGTERM", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    print("listening", sys.argv[1], os.environ.get("EXTRA"), flush=True)
    server.serve_forever()
    """
)


def log_lines(proc: ServerProcess) -> list[str]:
    return proc.log_text().splitlines()


class StandIn(ServerProcess):
    """A ServerProcess whose command is a tiny HTTP server answering /healthz."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", STAND_IN, str(self.port)]


def test_config_written_for_the_server_is_valid(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    proc = ServerProcess(
        tmp_path / "srv",
        workspaces={"default": ws, "ops": {"git": {"url": "https://example.com/ops.git"}}},
        settings={"workers": {"token": "tok"}, "limits": {"body": "2MiB"}},
    )
    settings = load_settings(proc.config_path, environ={})
    assert settings.port == proc.port
    assert settings.host == "127.0.0.1"
    assert settings.db.sqlite_path == tmp_path / "srv" / "partitur.db"
    assert settings.logs.dir == tmp_path / "srv" / "logs"
    assert settings.workspaces["default"].path == ws
    assert settings.workspaces["ops"].git is not None
    # Extra settings merge into the generated ones instead of replacing sections.
    assert settings.workers.token == "tok" and settings.workers.local.concurrency == 2
    assert settings.limits.body == 2 * 1024 * 1024
    assert proc.command()[1:4] == ["-m", "server.cli", "serve"]
    assert proc.command()[-2:] == ["--port", str(proc.port)]
    assert proc.url == f"http://127.0.0.1:{proc.port}"
    assert proc.ws_url == f"ws://127.0.0.1:{proc.port}"


def test_server_process_lifecycle(tmp_path: Path) -> None:
    proc = StandIn(tmp_path, env={"EXTRA": "hello"}).start()
    try:
        first_pid = proc.pid
        answer = httpx.get(f"{proc.url}/healthz", timeout=2)
        assert answer.status_code == 200 and answer.text == str(first_pid)
        assert f"listening {proc.port} hello" in log_lines(proc)
        # A graceful stop delivers SIGTERM and reports the exit code.
        assert proc.stop() == 0
        assert "got SIGTERM" in log_lines(proc)
        assert not proc.running()
        # Restart: same port, new process, log appended.
        proc.restart()
        assert proc.pid != first_pid
        assert httpx.get(f"{proc.url}/healthz", timeout=2).text == str(proc.pid)
        assert log_lines(proc).count(f"listening {proc.port} hello") == 2
        # kill() is SIGKILL: no handler runs.
        assert proc.kill() == -signal.SIGKILL
        assert log_lines(proc).count("got SIGTERM") == 1
        proc.restart()
        assert proc.running()
    finally:
        proc.close()
    assert not proc.running()


def test_server_that_exits_reports_its_log(tmp_path: Path) -> None:
    class Crashing(ServerProcess):
        def command(self) -> list[str]:
            return [sys.executable, "-c", "print('bad config, giving up'); raise SystemExit(3)"]

    with pytest.raises(ServerStartError) as excinfo:
        Crashing(tmp_path).start()
    assert "exited with code 3" in str(excinfo.value)
    assert "bad config, giving up" in str(excinfo.value)


def test_server_that_never_gets_healthy_times_out(tmp_path: Path) -> None:
    class Silent(ServerProcess):
        def command(self) -> list[str]:
            return [sys.executable, "-c", "import time; print('sleeping', flush=True); "
                    "time.sleep(60)"]

    proc = Silent(tmp_path, start_timeout=1.0)
    with pytest.raises(ServerStartError, match=r"not healthy after 1.0s[\s\S]*sleeping"):
        proc.start()
    assert not proc.running()


def test_stop_escalates_when_sigterm_is_ignored(tmp_path: Path) -> None:
    class Stubborn(StandIn):
        def command(self) -> list[str]:
            script = STAND_IN.replace("signal.signal(signal.SIGTERM, on_term)",
                                      "signal.signal(signal.SIGTERM, signal.SIG_IGN)")
            return [sys.executable, "-c", script, str(self.port)]

    proc = Stubborn(tmp_path).start()
    with pytest.raises(TimeoutError, match=r"did not exit within 0\.5s"):
        proc.stop(timeout=0.5)
    assert not proc.running()


def test_make_server_fixture_stops_servers(tmp_path: Path) -> None:
    # The fixture factory in a child run: a stand-in server started through it is gone
    # once that run is over.
    pid_file = tmp_path / "pid"
    (tmp_path / "test_child.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            import harness
            from test_harness import StandIn

            def test_child(make_server, monkeypatch):
                monkeypatch.setattr(harness.ServerProcess, "command", StandIn.command)
                proc = make_server()
                open({str(pid_file)!r}, "w").write(str(proc.pid))
                assert proc.running()
            """
        )
    )
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# --- the real server ------------------------------------------------------------------


def test_real_server_fixture(make_server: Callable[..., ServerProcess]) -> None:
    # The actual `python -m server.cli serve` behind the fixture: healthy, restartable.
    workspace = TESTS_DIR.parent / "workspaces" / "default"
    proc = make_server(workspaces={"default": workspace})
    assert httpx.get(f"{proc.url}/healthz", timeout=5).status_code == 200
    names = [w["name"] for w in httpx.get(f"{proc.url}/api/workspaces", timeout=5).json()]
    assert names == ["default"]
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 counts as clean too.
    assert proc.stop() in (0, -signal.SIGTERM)
    first_pid = proc.pid
    proc.restart()
    assert proc.pid != first_pid
    assert httpx.get(f"{proc.url}/healthz", timeout=5).status_code == 200
    assert "serving on" in proc.log_text()
