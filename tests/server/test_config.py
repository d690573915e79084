"""Tests for server/config.py: defaults, paths, env and CLI overrides, error reports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import ConfigInvalid
from server.config import Settings, load_settings, parse_bytes

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "server-config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def issues_of(excinfo: pytest.ExceptionInfo[ConfigInvalid]) -> list[str]:
    return [str(issue) for issue in excinfo.value.issues]


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.listen == "127.0.0.1:8080"
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.db.url == f"sqlite:///{tmp_path}/.partitur/partitur.db"
    assert settings.db.backend == "sqlite"
    assert settings.db.sqlite_path == tmp_path / ".partitur" / "partitur.db"
    assert settings.db.synchronous == "normal"
    assert settings.workspaces == {}
    assert settings.logs.dir == tmp_path / ".partitur" / "logs"
    assert settings.workers.token is None
    assert settings.workers.local.concurrency == (os.cpu_count() or 1)
    assert settings.recovery.heartbeat_timeout == 30.0
    assert settings.retention.job_days == 30
    assert settings.retention.sweep_interval == 3600.0
    assert settings.browser.executable is None
    assert settings.secrets_key is None
    assert settings.auth is None
    assert settings.limits.body == 1024 * 1024
    assert settings.limits.upload == 50 * 1024 * 1024
    assert settings.metrics.public is True
    assert settings.shutdown.grace == 10.0
    assert settings.stuck_after is None


def test_empty_file_and_empty_sections_mean_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), environ={}).port == 8080
    settings = load_settings(write(tmp_path, "logs:\nworkers:\nworkspaces:\n"), environ={})
    assert settings.logs.dir == tmp_path / ".partitur" / "logs"
    assert settings.workspaces == {}


def test_full_file(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        """
listen: 0.0.0.0:9000
db: {url: "postgresql://u:p@db:5432/partitur", synchronous: full}
workspaces:
  ops:
    git: {url: "https://example.com/ops.git", token: t0k, poll_interval: 2m}
workers: {token: secret, local: {concurrency: 0}}
recovery: {heartbeat_timeout: 500ms}
retention: {job_days: 7}
browser: {executable: /usr/bin/chromium}
secrets_key: k3y
auth: {access_ttl: 10m}
limits: {body: 50MB, upload: 2g}
shutdown: {grace: 1m}
stuck_after: 1h
""",
    )
    s = load_settings(cfg, environ={})
    assert (s.host, s.port) == ("0.0.0.0", 9000)
    assert s.db.backend == "postgres" and s.db.sqlite_path is None
    assert s.db.url == "postgresql://u:p@db:5432/partitur"
    assert s.db.synchronous == "full"
    git = s.workspaces["ops"].git
    assert git is not None and s.workspaces["ops"].path is None
    assert (git.url, git.ref, git.poll_interval, git.token) == (
        "https://example.com/ops.git", "main", 120.0, "t0k",
    )
    assert s.workers.token == "secret" and s.workers.local.concurrency == 0
    assert s.recovery.heartbeat_timeout == 0.5
    assert s.retention.job_days == 7
    assert s.browser.executable == "/usr/bin/chromium"
    assert s.limits.body == 50_000_000 and s.limits.upload == 2 * 1024**3
    # With auth configured, /metrics is no longer public by default.
    assert s.metrics.public is False
    assert s.shutdown.grace == 60.0 and s.stuck_after == 3600.0
    # Secrets stay out of reprs (logs print settings).
    assert "secret" not in repr(s) and "k3y" not in repr(s) and "t0k" not in repr(s)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.listen = "0.0.0.0:1"  # type: ignore[misc]


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = write(
        conf_dir,
        """
db: {url: "sqlite:///data/p.db"}
workspaces:
  a: {path: ws/a}
  b: ../shared/b
  c: {path: /abs/c}
  d: {git: {url: "git@example.com:d.git", ssh_key: keys/id_ed25519}}
logs: {dir: logs}
""",
    )
    # A relative --config path must work as well as an absolute one.
    s = load_settings(Path(os.path.relpath(cfg, elsewhere)), environ={})
    assert s.db.url == f"sqlite:///{conf_dir}/data/p.db"
    assert s.db.sqlite_path == conf_dir / "data" / "p.db"
    assert s.workspaces["a"].path == conf_dir / "ws" / "a"
    assert s.workspaces["b"].path == conf_dir / ".." / "shared" / "b"
    assert s.workspaces["c"].path == Path("/abs/c")
    git = s.workspaces["d"].git
    assert git is not None and git.ssh_key == conf_dir / "keys" / "id_ed25519"
    assert s.logs.dir == conf_dir / "logs"
    # Defaults resolve against the config folder too, not the current folder.
    s2 = load_settings(write(conf_dir, "listen: 127.0.0.1:1\n", "other.yaml"), environ={})
    assert s2.db.sqlite_path == conf_dir / ".partitur" / "partitur.db"
    assert s2.logs.dir == conf_dir / ".partitur" / "logs"


def test_sqlite_absolute_and_memory_urls(tmp_path: Path) -> None:
    cfg = write(tmp_path, "db: {url: 'sqlite:////var/lib/p.db'}\n")
    assert load_settings(cfg, environ={}).db.sqlite_path == Path("/var/lib/p.db")
    cfg = write(tmp_path, "db: {url: 'sqlite:///:memory:'}\n")
    s = load_settings(cfg, environ={})
    assert s.db.url == "sqlite:///:memory:" and s.db.sqlite_path is None


def test_env_overrides_nested_and_typed(tmp_path: Path) -> None:
    cfg = write(tmp_path, "workers: {local: {concurrency: 8}}\nmetrics: {public: true}\n")
    s = load_settings(
        cfg,
        environ={
            "PARTITUR__WORKERS__LOCAL__CONCURRENCY": "2",
            "PARTITUR__DB__URL": "postgresql://postgres@127.0.0.1:5432/x",
            "PARTITUR__LISTEN": "0.0.0.0:9000",
            "partitur__Metrics__PUBLIC": "false",
            "PARTITUR__LIMITS__BODY": "4MiB",
            "PARTITUR__WORKSPACES__OPS__PATH": "ops",
            # Single-underscore variables belong to other tools and are ignored.
            "PARTITUR_TEST_PG": "postgresql://nowhere",
            "PARTITUR_REQUIRE_ALL": "1",
        },
    )
    assert s.workers.local.concurrency == 2
    assert s.db.url == "postgresql://postgres@127.0.0.1:5432/x"
    assert (s.host, s.port) == ("0.0.0.0", 9000)
    assert s.metrics.public is False
    assert s.limits.body == 4 * 1024 * 1024
    assert s.workspaces["ops"].path == tmp_path / "ops"


def test_env_value_for_a_text_key_stays_text() -> None:
    # YAML would read `on` as true and `0123` as 83; a token is still the text typed.
    s = load_settings(
        environ={"PARTITUR__WORKERS__TOKEN": "on", "PARTITUR__SECRETS_KEY": "12345"}
    )
    assert s.workers.token == "on"
    assert s.secrets_key == "12345"


def test_empty_env_value_unsets(tmp_path: Path) -> None:
    cfg = write(tmp_path, "workers: {token: abc}\n")
    assert load_settings(cfg, environ={"PARTITUR__WORKERS__TOKEN": ""}).workers.token is None


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITUR__RETENTION__JOB_DAYS", "3")
    assert load_settings().retention.job_days == 3


def test_host_and_port_overrides(tmp_path: Path) -> None:
    cfg = write(tmp_path, "listen: 10.0.0.1:8080\n")
    env = {"PARTITUR__LISTEN": "10.0.0.2:8081"}
    s = load_settings(cfg, environ=env, overrides={"port": 9999, "host": None})
    assert (s.host, s.port) == ("10.0.0.2", 9999)
    s = load_settings(cfg, environ={}, overrides={"host": "0.0.0.0", "port": None})
    assert s.listen == "0.0.0.0:8080"
    s = load_settings(environ={}, overrides={"port": "7000"})
    assert s.listen == "127.0.0.1:7000"
    s = load_settings(environ={}, overrides={"db.url": "memory://", "workers.local.concurrency": 1})
    assert s.db.backend == "memory" and s.workers.local.concurrency == 1


def test_listen_forms() -> None:
    assert load_settings(environ={"PARTITUR__LISTEN": "9000"}).listen == "127.0.0.1:9000"
    ipv6 = load_settings(environ={"PARTITUR__LISTEN": "[::1]:8080"})
    assert (ipv6.host, ipv6.port) == ("::1", 8080)
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(environ={}, overrides={"port": 70000})
    assert any("listen: invalid listen address" in i for i in issues_of(excinfo))


def test_unknown_key_with_did_you_mean_and_line(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "listen: 127.0.0.1:8080\nworkers:\n  local:\n    concurency: 2\nworkspace: {}\n",
    )
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(cfg, environ={})
    found = issues_of(excinfo)
    assert (
        f"{cfg}:4:5: workers.local.concurency: unknown key 'concurency' "
        "(did you mean 'concurrency'?)"
    ) in found
    assert f"{cfg}:5:1: workspace: unknown key 'workspace' (did you mean 'workspaces'?)" in found
    assert excinfo.value.code == "invalid_config"


def test_unknown_key_in_a_workspace(tmp_path: Path) -> None:
    cfg = write(tmp_path, "workspaces:\n  ops:\n    gti: {url: x}\n")
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(cfg, environ={})
    issue = excinfo.value.issues[0]
    assert issue.path == "workspaces.ops.gti"
    assert issue.hint == "did you mean 'git'?"
    assert (issue.line, issue.column) == (3, 5)


def test_bad_value_names_key_and_line(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "workers:\n  local:\n    concurrency: many\nrecovery: {heartbeat_timeout: soon}\n"
        "limits: {body: huge}\ndb: {url: 'mysql://x', synchronous: off}\n",
    )
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(cfg, environ={})
    found = issues_of(excinfo)
    assert found[0] == (
        f"{cfg}:3:5: workers.local.concurrency: Input should be a valid integer, "
        "unable to parse string as an integer"
    )
    assert any(f.startswith(f"{cfg}:4:12: recovery.heartbeat_timeout: invalid duration")
               for f in found)
    assert any(f.startswith(f"{cfg}:5:10: limits.body: invalid size 'huge'") for f in found)
    assert any("db.url: unsupported database URL 'mysql://x'" in f for f in found)
    assert any("db.synchronous: Input should be 'normal' or 'full'" in f for f in found)
    # All problems are reported at once, and the message lists them all.
    assert len(found) == 5
    assert "workers.local.concurrency" in str(excinfo.value)


def test_negative_and_exclusive_values(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "workers: {local: {concurrency: -1}}\nworkspaces:\n  both: {path: x, git: {url: y}}\n"
        "  neither: {}\n  'bad name': x\n",
    )
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(cfg, environ={})
    by_path = {i.path: i for i in excinfo.value.issues}
    assert "greater than or equal to 0" in by_path["workers.local.concurrency"].message
    assert by_path["workspaces.both"].message == "a workspace needs exactly one of 'path' or 'git'"
    assert by_path["workspaces.both"].line == 3
    assert by_path["workspaces.neither"].line == 4
    assert "invalid workspace name 'bad name'" in by_path["workspaces.bad name"].message
    assert by_path["workspaces.bad name"].line == 5


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(environ={"PARTITUR__WORKERS__LOCAL__CONCURRENCY": "lots"})
    (issue,) = excinfo.value.issues
    assert issue.path == "workers.local.concurrency"
    assert issue.file is None
    assert str(issue) == (
        "workers.local.concurrency: Input should be a valid integer, unable to parse string "
        "as an integer (from environment variable PARTITUR__WORKERS__LOCAL__CONCURRENCY)"
    )


def test_unknown_env_key_suggests() -> None:
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(environ={"PARTITUR__WORKER__TOKEN": "x"})
    (issue,) = excinfo.value.issues
    assert issue.path == "worker"
    assert issue.hint == (
        "did you mean 'workers'?; from environment variable PARTITUR__WORKER__TOKEN"
    )


def test_env_overrides_file_position(tmp_path: Path) -> None:
    # A value replaced from the environment is no longer blamed on the file's line.
    cfg = write(tmp_path, "retention:\n  job_days: 3\n")
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(cfg, environ={"PARTITUR__RETENTION__JOB_DAYS": "-2"})
    (issue,) = excinfo.value.issues
    assert issue.file is None
    assert "PARTITUR__RETENTION__JOB_DAYS" in (issue.hint or "")


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, "listen: 127.0.0.1:8080\ndb:\n  url: [unclosed\n")
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(cfg, environ={})
    (issue,) = excinfo.value.issues
    assert issue.file == str(cfg) and issue.line is not None and issue.line >= 3
    assert issue.message.startswith("invalid YAML")


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigInvalid, match="must be a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (1234, 1234),
        ("1234", 1234),
        ("1MiB", 1024**2),
        ("1 MiB", 1024**2),
        ("50MB", 50_000_000),
        ("512KiB", 512 * 1024),
        ("1m", 1024**2),
        ("1.5k", 1536),
        ("2GB", 2_000_000_000),
    ],
)
def test_parse_bytes(text: object, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["", "MiB", "1XB", "-1", True, -5, None])
def test_parse_bytes_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_bytes(bad)


def test_repo_default_config_is_valid() -> None:
    s = load_settings(REPO / "server-config.yaml", environ={})
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.db.sqlite_path == REPO / ".partitur" / "partitur.db"
    assert s.logs.dir == REPO / ".partitur" / "logs"
    assert s.workers.local.concurrency == 4
    assert set(s.workspaces) == {"default", "data-pipeline", "ops", "composition",
                                 "browser-demo"}
    for name, ws in s.workspaces.items():
        assert ws.path is not None and ws.path.is_relative_to(REPO / "workspaces"), name
        assert (ws.path / ".workflows").is_dir(), name


def test_anchors_and_aliases_are_followed_once(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "base: &ws {path: a}\nworkspaces:\n  one: *ws\n  two: *ws\n",
    )
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(cfg, environ={})
    assert [i.path for i in excinfo.value.issues] == ["base"]
    cfg = write(tmp_path, "workspaces:\n  one: &ws {path: a}\n  two: *ws\n")
    s = load_settings(cfg, environ={})
    assert s.workspaces["one"] == s.workspaces["two"]


def test_workers_mode_default_file_env_and_bad_value(tmp_path: Path) -> None:
    from server.app import runtime_options

    assert load_settings(environ={}).workers.mode == "auto"
    cfg = write(tmp_path, "workers:\n  mode: remote\n  local: {concurrency: 0}\n")
    settings = load_settings(cfg, environ={})
    assert settings.workers.mode == "remote"
    # The engine gets the mode as given: it decides where ready steps go.
    options, _ = runtime_options(settings)
    assert (options.worker_mode, options.concurrency) == ("remote", 0)
    overridden = load_settings(cfg, environ={"PARTITUR__WORKERS__MODE": "local"})
    assert overridden.workers.mode == "local"
    bad = write(tmp_path, "workers:\n  mode: cluster\n", name="bad.yaml")
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(bad, environ={})
    (issue,) = excinfo.value.issues
    assert issue.path == "workers.mode"
    assert issue.line == 2
    assert "'auto', 'local' or 'remote'" in issue.message


@pytest.mark.parametrize(("mode", "concurrency", "remote"), [
    ("remote", 2, True), ("local", 0, False), ("auto", 0, True), ("auto", 2, False)])
def test_workers_mode_picks_the_dispatcher(tmp_path: Path, mode: str, concurrency: int,
                                           remote: bool) -> None:
    from engine.runtime import Runtime
    from server.app import runtime_options

    cfg = write(tmp_path, f"workers: {{mode: {mode}, local: {{concurrency: {concurrency}}}}}\n")
    runtime = Runtime(runtime_options(load_settings(cfg, environ={}))[0])
    if remote:
        assert runtime.orchestrator.dispatcher is runtime.queue is not None
        assert runtime.executor is None
    else:
        assert runtime.orchestrator.dispatcher is runtime.executor
        # `local` with no embedded workers runs nothing: no dispatcher at all.
        assert (runtime.executor is None) == (concurrency == 0)


def test_cloud_workspace_names_are_reserved(tmp_path: Path) -> None:
    (tmp_path / "a" / ".workflows").mkdir(parents=True)
    cfg = write(tmp_path, "workspaces:\n  cloud.acme.d1: {path: a}\n")
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(cfg, environ={})
    issue = excinfo.value.issues[0]
    assert "kept for cloud deployments" in issue.message
    assert issue.path.startswith("workspaces")


def test_retention_sweep_interval(tmp_path: Path) -> None:
    cfg = write(tmp_path, "retention: {job_days: 7, sweep_interval: 15m}\n")
    settings = load_settings(cfg, environ={})
    assert (settings.retention.job_days, settings.retention.sweep_interval) == (7, 900.0)
    from server.app import runtime_options

    options, _ = runtime_options(settings)
    assert (options.job_days, options.retention_interval) == (7.0, 900.0)
    with pytest.raises(ConfigInvalid) as excinfo:
        load_settings(write(tmp_path, "retention: {sweep_interval: 0s}\n"), environ={})
    assert [i.path for i in excinfo.value.issues] == ["retention.sweep_interval"]
