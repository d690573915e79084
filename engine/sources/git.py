"""Git sources: fetch a ref with the git CLI and keep one checkout per revision.

A `GitRepo` keeps a bare mirror in `<cache>/repo.git` and each checked-out commit in
`<cache>/rev/<sha>/` (extracted with `git archive`, so a checkout holds the files only).
A checkout is written to a temporary folder and renamed into place, so a half-written
one is never seen. Auth: an https `token` is sent as an HTTP Basic header
(`x-access-token:<token>`, which GitHub, GitLab and Gitea accept) through git's
environment config, never on the command line; an `ssh_key` is passed to ssh with
`IdentitiesOnly`. Git never prompts.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.errors import PartiturError

GIT_TIMEOUT = 120.0


class GitError(PartiturError):
    """A git command failed."""

    code = "git_error"
    retryable = True


@dataclass(frozen=True)
class GitSpec:
    """Where a git workspace comes from (`workspaces.<name>.git` in the server config)."""

    url: str
    ref: str = "main"
    poll_interval: float = 30.0
    token: str | None = None
    ssh_key: Path | None = None


class GitRepo:
    """One repository's mirror and revision checkouts under `cache`."""

    def __init__(self, spec: GitSpec, cache: Path) -> None:
        self.spec = spec
        self.cache = Path(cache)
        self.mirror = self.cache / "repo.git"
        self.revisions = self.cache / "rev"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG")}
        env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true",
                    "LC_ALL": "C"})
        if self.spec.token:
            basic = base64.b64encode(f"x-access-token:{self.spec.token}".encode()).decode()
            env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader",
                        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
        if self.spec.ssh_key is not None:
            env["GIT_SSH_COMMAND"] = (
                f"ssh -i '{self.spec.ssh_key}' -o IdentitiesOnly=yes "
                "-o StrictHostKeyChecking=accept-new -o BatchMode=yes"
            )
        return env

    def _git(self, *args: str, cwd: Path | None = None) -> bytes:
        what = next(a for a in args if not a.startswith("-") and "/" not in a)
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, env=self._env(), capture_output=True,
                timeout=GIT_TIMEOUT, check=False, stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GitError(f"git {what} of {self._safe_url()} failed: {exc}") from None
        if done.returncode != 0:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
            detail = (fatal or lines or [f"exit code {done.returncode}"])[0]
            raise GitError(f"git {what} of {self._safe_url()} failed: {detail}")
        return done.stdout

    def _safe_url(self) -> str:
        url = self.spec.url
        if "@" in url and "://" in url:
            scheme, rest = url.split("://", 1)
            return f"{scheme}://…@{rest.split('@', 1)[1]}"
        return url

    def fetch(self) -> str:
        """Fetch `ref` from the remote; the commit sha it points at."""
        if not (self.mirror / "HEAD").exists():
            self.cache.mkdir(parents=True, exist_ok=True)
            self._git("init", "--bare", "--quiet", str(self.mirror))
        self._git("--git-dir", str(self.mirror), "fetch", "--quiet", "--no-tags", "--force",
                  self.spec.url, f"{self.spec.ref}")
        sha = self._git("--git-dir", str(self.mirror), "rev-parse", "FETCH_HEAD^{commit}")
        return sha.decode().strip()

    def path_of(self, sha: str) -> Path:
        return self.revisions / sha

    def checkout(self, sha: str) -> Path:
        """The folder holding revision `sha` (extracted once, then reused)."""
        target = self.path_of(sha)
        if target.is_dir():
            return target
        self.revisions.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=self.revisions))
        try:
            archive = tmp / ".archive.tar"
            self._git("--git-dir", str(self.mirror), "archive", "--format=tar",
                      "-o", str(archive), sha)
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
            archive.unlink()
            try:
                tmp.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def remove(self, sha: str) -> None:
        """Delete the checkout of `sha` (no job uses it any more)."""
        shutil.rmtree(self.path_of(sha), ignore_errors=True)

    def remove_partial(self) -> int:
        """Delete half-extracted checkouts (`.<sha>-*`) a crash left behind; how many there
        were. Only call it when no `checkout` runs."""
        if not self.revisions.is_dir():
            return 0
        partial = [p for p in self.revisions.iterdir() if p.name.startswith(".")]
        for path in partial:
            shutil.rmtree(path, ignore_errors=True)
        return len(partial)

    def checkouts(self) -> list[str]:
        """The revisions checked out in the cache."""
        if not self.revisions.is_dir():
            return []
        return sorted(p.name for p in self.revisions.iterdir()
                      if p.is_dir() and not p.name.startswith("."))
