"""Interactive browser sessions of the cloud API (`/v1/sessions/*`, docs/browser.md).

`SessionManager.create` launches a Chromium of its own with a CDP endpoint on
127.0.0.1 (a free port) in a process group of its own, and returns a `Session` with the
`cdp_url` a client connects to (e.g. Playwright's `connect_over_cdp`). The live view
(server.live_view) shows the session's screen and forwards clicks and keys through the
server; its link is signed (`live_view_path`).

A session ends when it is closed, when its timeout passes (default 3600 s, at most
7200 s) or when it has been idle for `idle_timeout` — no live-view use, no `get`, and no
change in its pages (URL or title) — whichever comes first; its browser's process group
is killed and its profile folder removed. Sessions are limited per tenant. They live in
the server's memory: a server that stops kills its sessions' browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.auth.service import RateLimited
from engine.clock import new_job_id
from engine.errors import Issue, NotFound, PartiturError, ValidationFailed
from engine.recordings import UrlSigner
from engine.views import iso

log = logging.getLogger("partitur.sessions")

DEFAULT_TIMEOUT, MAX_TIMEOUT = 3600, 7200
RUNNING, CLOSED = "running", "closed"
LAUNCH_ARGS = ("--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--no-first-run", "--disable-sync", "--no-default-browser-check")
LIVE_PREFIX = "/live"


class SessionLimit(RateLimited):
    """Too many browser sessions are open for this tenant."""

    code = "session_limit"


class BrowserLaunchFailed(PartiturError):
    """The session's browser did not start."""

    code = "browser_launch_failed"


@dataclass(slots=True)
class Session:
    """One interactive browser."""

    id: str
    tenant: str
    port: int
    pid: int
    cdp_url: str
    created_at: float
    expires_at: float
    last_activity: float
    profile_dir: Path
    status: str = RUNNING
    closed_at: float | None = None
    close_reason: str | None = None
    fingerprint: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def view(self, live_view_url: str | None) -> dict[str, Any]:
        """The fields `sessions/create` and `sessions/get` answer."""
        return {"session_id": self.id, "status": self.status, "cdp_url":
                self.cdp_url if self.status == RUNNING else None,
                "live_view_url": live_view_url if self.status == RUNNING else None,
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "closed_at": iso(self.closed_at), "close_reason": self.close_reason}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def live_view_path(signer: UrlSigner, session: Session) -> str:
    """The signed path of the session's live view page (valid while the session lives)."""
    return signer.sign(f"{LIVE_PREFIX}/{session.id}", int(session.expires_at))


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by `pid` (the browser and its helpers)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class SessionManager:
    """Launch, find, close and reap sessions; see the module docstring."""

    def __init__(self, executable: str, *, max_per_tenant: int = 3,
                 idle_timeout: float = 600.0, reap_interval: float = 5.0,
                 launch_timeout: float = 20.0, now: Callable[[], float] = time.time) -> None:
        self.executable = executable
        self.max_per_tenant = max_per_tenant
        self.idle_timeout = idle_timeout
        self.reap_interval = reap_interval
        self.launch_timeout = launch_timeout
        self._now = now
        self._sessions: dict[str, Session] = {}
        self._lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None

    # --- create, get, close ----------------------------------------------------------

    async def create(self, tenant: str, *, timeout_seconds: int | None = None,
                     start_url: str | None = None, viewport: Mapping[str, Any] | None = None,
                     headless: bool = True) -> Session:
        """Launch a browser for `tenant`; `SessionLimit` when it has too many."""
        timeout = DEFAULT_TIMEOUT if timeout_seconds is None else timeout_seconds
        if isinstance(timeout, bool) or not isinstance(timeout, int) \
                or not 1 <= timeout <= MAX_TIMEOUT:
            raise ValidationFailed(issues=[Issue(
                message=f"'timeout_seconds' must be an integer from 1 to {MAX_TIMEOUT}",
                path="timeout_seconds")])
        width, height = _viewport(viewport)
        async with self._lock:
            running = [s for s in self._sessions.values()
                       if s.tenant == tenant and s.status == RUNNING]
            if len(running) >= self.max_per_tenant:
                raise SessionLimit(f"tenant {tenant!r} has {len(running)} open browser "
                                   f"sessions (limit {self.max_per_tenant}); close one first")
            session = await self._launch(tenant, timeout, start_url, width, height, headless)
            self._sessions[session.id] = session
        return session

    async def _launch(self, tenant: str, timeout: int, start_url: str | None, width: int,
                      height: int, headless: bool) -> Session:
        profile = Path(tempfile.mkdtemp(prefix="partitur-session-"))
        port = free_port()
        args = [self.executable, *(LAUNCH_ARGS if headless else LAUNCH_ARGS[1:]),
                "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}",
                f"--user-data-dir={profile}", f"--window-size={width},{height}",
                start_url or "about:blank"]
        process = await asyncio.to_thread(
            subprocess.Popen, args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            cdp_url = await self._wait_cdp(port, process)
        except BaseException:
            kill_group(process.pid)
            await asyncio.to_thread(process.wait)
            shutil.rmtree(profile, ignore_errors=True)
            raise
        now = self._now()
        return Session(id=new_job_id(), tenant=tenant, port=port, pid=process.pid,
                       cdp_url=cdp_url, created_at=now, expires_at=now + timeout,
                       last_activity=now, profile_dir=profile, process=process)

    async def _wait_cdp(self, port: int, process: subprocess.Popen[bytes]) -> str:
        import httpx  # with the first session, not at every start

        deadline = time.monotonic() + self.launch_timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise BrowserLaunchFailed(
                        f"the browser exited at start (code {process.returncode})")
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    answer = await client.get(f"http://127.0.0.1:{port}/json/version")
                    url: str = answer.json()["webSocketDebuggerUrl"]
                    return url
                if time.monotonic() > deadline:
                    raise BrowserLaunchFailed("the browser did not open its CDP endpoint in time")
                await asyncio.sleep(0.1)

    def get(self, tenant: str, session_id: str, *, touch: bool = True) -> Session:
        """The tenant's session `session_id` (running or closed); `NotFound` otherwise."""
        session = self._sessions.get(session_id)
        if session is None or session.tenant != tenant:
            raise NotFound(f"session {session_id!r} not found")
        if touch and session.status == RUNNING:
            session.last_activity = self._now()
        return session

    def of_tenant(self, tenant: str, status: str | None = None) -> list[Session]:
        """The tenant's sessions, newest first (closed ones are kept for an hour).

        Listing is not activity: it does not keep a session from closing when idle.
        """
        found = [s for s in self._sessions.values()
                 if s.tenant == tenant and (status is None or s.status == status)]
        return sorted(found, key=lambda s: (s.created_at, s.id), reverse=True)

    def running(self, session_id: str) -> Session | None:
        """A running session by id, whatever its tenant (the live view checks a signature)."""
        session = self._sessions.get(session_id)
        return session if session is not None and session.status == RUNNING else None

    def touch(self, session_id: str) -> None:
        """Record activity (live-view input) on a session."""
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_activity = self._now()

    async def close(self, tenant: str, session_id: str, reason: str = "closed") -> Session:
        """Close the session (idempotent): kill its browser, remove its profile."""
        session = self.get(tenant, session_id, touch=False)
        await self._end(session, reason)
        return session

    async def _end(self, session: Session, reason: str) -> None:
        if session.status != RUNNING:
            return
        session.status = CLOSED
        session.closed_at = self._now()
        session.close_reason = reason
        kill_group(session.pid)
        if session.process is not None:
            await asyncio.to_thread(session.process.wait)
        shutil.rmtree(session.profile_dir, ignore_errors=True)
        log.info("session %s closed (%s)", session.id, reason)

    async def page_ws_url(self, session: Session) -> str:
        """The CDP websocket of the session's first page (opening one if there is none)."""
        import httpx

        async with httpx.AsyncClient(timeout=5.0) as client:
            base = f"http://127.0.0.1:{session.port}"
            targets = (await client.get(f"{base}/json/list")).json()
            pages = [t for t in targets if t.get("type") == "page"]
            if not pages:
                pages = [(await client.put(f"{base}/json/new?about:blank")).json()]
            url: str = pages[0]["webSocketDebuggerUrl"]
            return url

    # --- reaping ---------------------------------------------------------------------

    async def reap(self) -> list[str]:
        """Close the sessions whose timeout passed or that are idle; returns their ids."""
        now = self._now()
        closed = []
        for session in [s for s in self._sessions.values() if s.status == RUNNING]:
            if session.process is not None and session.process.poll() is not None:
                await self._end(session, "browser exited")
            elif now >= session.expires_at:
                await self._end(session, "timeout")
            else:
                await self._observe(session)
                if now - session.last_activity >= self.idle_timeout:
                    await self._end(session, "idle")
                else:
                    continue
            closed.append(session.id)
        # Forget sessions closed long ago.
        for sid in [s.id for s in self._sessions.values()
                    if s.closed_at is not None and now - s.closed_at > 3600]:
            del self._sessions[sid]
        return closed

    async def _observe(self, session: Session) -> None:
        """A change in the session's pages (URL, title) counts as activity."""
        import httpx

        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                targets = (await client.get(
                    f"http://127.0.0.1:{session.port}/json/list")).json()
        except (httpx.HTTPError, ValueError):
            return
        fingerprint = "|".join(sorted(f"{t.get('url')}#{t.get('title')}" for t in targets
                                      if t.get("type") == "page"))
        if fingerprint != session.fingerprint:
            if session.fingerprint:
                session.last_activity = self._now()
            session.fingerprint = fingerprint

    def start(self) -> None:
        """Reap in the background every `reap_interval` seconds."""
        if self._reaper is None:
            self._reaper = asyncio.ensure_future(self._reap_forever())

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_interval)
            try:
                await self.reap()
            except Exception:
                log.exception("session reaper")

    async def stop(self) -> None:
        """Stop reaping and close every session."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for session in list(self._sessions.values()):
            await self._end(session, "server stopped")


def _viewport(viewport: Mapping[str, Any] | None) -> tuple[int, int]:
    if not viewport:
        return 1280, 800
    try:
        width, height = int(viewport["width"]), int(viewport["height"])
    except (KeyError, TypeError, ValueError):
        raise ValidationFailed(issues=[Issue(message="'viewport' needs integer 'width' and "
                                                     "'height'", path="viewport")]) from None
    if not (100 <= width <= 4096 and 100 <= height <= 4096):
        raise ValidationFailed(issues=[Issue(message="'viewport' sizes must be 100-4096",
                                             path="viewport")])
    return width, height
