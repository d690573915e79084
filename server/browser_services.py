"""The server side of browser sessions, recordings and failure emails, assembled.

`BrowserServices` builds, from the settings, the recording URL signer, the session
manager, the recording retention sweeper, the debug reports' LLM notes (`debug.llm`) and
(with `notifications.email`) the failure mailer; `attach` hooks them into the app and the
runtime before it opens, `start` and `close` run with the app's lifespan. `routes()` are
the public, signature-gated routes: the live view and the signed recording files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.routing import BaseRoute

from engine.cloud import Cloud
from engine.debugllm import DebugNotes
from engine.notify_email import FailureMailer, SmtpConfig
from engine.recordings import RetentionSweeper, UrlSigner, recording_link, recordings_secret
from engine.runners.browser_evidence import default_executable
from engine.runtime import Runtime
from engine.sessions import SessionManager
from server.live_view import live_view_routes
from server.recording_files import recording_routes


def routes() -> list[BaseRoute]:
    return [*live_view_routes(), *recording_routes()]


def base_url(settings: Any) -> str:
    """The server's own URL for links sent away from a request (emails)."""
    configured = getattr(settings.notifications, "base_url", None)
    return (configured or f"http://{settings.listen}").rstrip("/")


class BrowserServices:
    """Sessions, signed recordings, retention and failure emails of one server."""

    def __init__(self, settings: Any, runtime: Runtime, cloud: Cloud) -> None:
        data_dir = runtime.options.logs_dir.parent
        self.settings = settings
        self.runtime = runtime
        self.signer = UrlSigner(recordings_secret(settings.secrets_key, data_dir))
        self.url_ttl = float(settings.recordings.url_ttl)
        executable = settings.browser.executable or default_executable()
        self.sessions = SessionManager(executable,
                                       max_per_tenant=settings.sessions.max_per_tenant,
                                       idle_timeout=float(settings.sessions.idle_timeout))
        self.retention = RetentionSweeper(runtime.options.artifacts_dir,
                                          settings.recordings.retention_days,
                                          float(settings.recordings.sweep_interval))
        self.debug_notes = DebugNotes(cloud.repo, cloud.options.llm)
        email = settings.notifications.email
        self.mailer = None if email is None else FailureMailer(
            SmtpConfig(host=email.host, port=email.port, tls=email.tls, user=email.user,
                       password=email.password, sender=email.sender,
                       recipients=tuple(email.recipients), timeout=float(email.timeout)),
            runtime.store, cloud.repo, runtime.options.artifacts_dir,
            base_url=base_url(settings), recording=self._email_recording(float(email.link_ttl)))

    def _email_recording(self, ttl: float) -> Callable[[str, str], str]:
        """Signed recording links for emails: they open with no login, for `ttl` seconds."""
        base = base_url(self.settings)

        def link(job_id: str, step: str) -> str:
            return recording_link(self.signer, base, job_id, step, ttl=ttl)[0]
        return link

    def attach(self, state: Any) -> None:
        """Expose the services on `app.state`; listen to job events (before opening)."""
        state.recording_signer = self.signer
        state.sessions = self.sessions
        state.browser_services = self
        if self.mailer is not None:
            self.runtime.orchestrator.on_events(self.mailer.listener)

    async def start(self) -> None:
        if self.mailer is not None:
            await self.mailer.catch_up()
        self.sessions.start()
        self.retention.start()

    async def close(self) -> None:
        await self.sessions.stop()
        await self.retention.stop()
        if self.mailer is not None:
            await self.mailer.drain()
