"""Git workspace auth against real transports: an https-style token checked by a real
`git http-backend` server, and an ssh key handed to the ssh program git runs."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import textwrap
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from engine.sources.git import GitError, GitRepo, GitSpec

TOKEN = "tok-3141592653"
HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                           *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str]:
    """A repository `repo` with one commit on `main`; its sha."""
    path = tmp_path / "repo"
    (path / ".workflows").mkdir(parents=True)
    (path / ".workflows" / "main.yaml").write_text("tasks: {}\n", "utf-8")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "one")
    return path, git(path, "rev-parse", "HEAD")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _backend(root: Path, seen: list[str | None]) -> Any:
    """A WSGI app that serves `root` through git http-backend, with Basic auth."""
    wanted = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()

    def app(environ: dict[str, Any], start: Any) -> Iterable[bytes]:
        seen.append(environ.get("HTTP_AUTHORIZATION"))
        if environ.get("HTTP_AUTHORIZATION") != wanted:
            start("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"')])
            return [b"no"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": environ["REQUEST_METHOD"],
               "PATH_INFO": environ["PATH_INFO"],
               "QUERY_STRING": environ.get("QUERY_STRING", ""),
               "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": "x-access-token"}
        if environ.get("HTTP_GIT_PROTOCOL"):
            env["GIT_PROTOCOL"] = environ["HTTP_GIT_PROTOCOL"]
        out = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True,
                             check=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [tuple(h.split(": ", 1)) for h in head.decode().split("\r\n") if h]
        status = next((v for k, v in headers if k.lower() == "status"), "200 OK")
        start(status, [(k, v) for k, v in headers if k.lower() != "status"])
        return [payload]

    return app


@pytest.fixture
def http_git(repo: tuple[Path, str]) -> Iterator[tuple[str, list[str | None]]]:
    """The repository served over HTTP at `<url>/repo`; the Authorization headers seen."""
    seen: list[str | None] = []
    server = make_server("127.0.0.1", 0, _backend(repo[0].parent, seen),
                         server_class=WSGIServer, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/repo", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_is_sent_as_basic_auth_and_never_in_the_url(
        tmp_path: Path, repo: tuple[Path, str],
        http_git: tuple[str, list[str | None]]) -> None:
    url, seen = http_git
    sha = repo[1]
    without = GitRepo(GitSpec(url=url, ref="main"), tmp_path / "anon")
    with pytest.raises(GitError) as caught:
        without.fetch()
    assert url in str(caught.value)
    with_token = GitRepo(GitSpec(url=url, ref="main", token=TOKEN), tmp_path / "cache")
    assert with_token.fetch() == sha
    assert (with_token.checkout(sha) / ".workflows" / "main.yaml").is_file()
    assert any(h and h.startswith("Basic ") for h in seen)
    wrong = GitRepo(GitSpec(url=url, ref="main", token="wrong"), tmp_path / "wrong")
    with pytest.raises(GitError) as caught:
        wrong.fetch()
    assert "wrong" not in str(caught.value) and TOKEN not in str(caught.value)


def test_an_ssh_key_is_given_to_ssh(tmp_path: Path, repo: tuple[Path, str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in `ssh` on PATH: it records its arguments and runs the remote command
    # locally, as sshd would on the host.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ssh-args"
    fake = bin_dir / "ssh"
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        printf '%s\\n' "$@" > {log}
        for last; do :; done
        exec sh -c "$last"
        """), "utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    key = tmp_path / "deploy key"
    key.write_text("not a real key\n", "utf-8")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    source = GitRepo(GitSpec(url=f"ssh://git@example.invalid{repo[0]}", ref="main",
                             ssh_key=key), tmp_path / "cache")
    assert source.fetch() == repo[1]
    args = log.read_text("utf-8").splitlines()
    assert args[args.index("-i") + 1] == str(key)
    assert "IdentitiesOnly=yes" in args and "BatchMode=yes" in args
    assert "git@example.invalid" in args
