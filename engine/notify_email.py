"""Failure emails: one email per failed job that ran a browser step (docs/browser.md).

When a job with a browser step fails and `notifications.email` is configured,
`FailureMailer` builds the job's debug report (`engine.debugreport.build_report`) and
mails its diagnosis, handoff prompt and evidence links to the configured recipients
over SMTP (STARTTLS, implicit TLS or plain; optional login).

Once per job, across restarts and replicas: before sending, the mailer claims the job by
inserting a `failure_email` object (id = job id) into the cloud repository, whose
primary key refuses a second claim; after the SMTP server accepted the message it records
`sent_at`. `catch_up()` (at start-up) sends what a stopped server left unsent: failed
jobs without a claim, and claims that never got a `sent_at`. A crash between the SMTP
server's acceptance and the record can repeat one email; its `Message-ID` is derived from
the job id, so mail systems can recognise the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import smtplib
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any, Literal

from engine.clock import Clock, SystemClock
from engine.core import events as ev
from engine.core.state import JobState
from engine.debugreport import build_report
from engine.errors import Conflict
from engine.store.base import EventStore, JobFilter
from engine.store.cloud import CloudObject, CloudRepository
from engine.views import iso

log = logging.getLogger("partitur.notify")

EMAIL = "failure_email"
TENANT = "default"
SENDING, SENT, FAILED = "sending", "sent", "failed"
MAX_ATTEMPTS = 3
CATCH_UP_JOBS = 500
CATCH_UP_WINDOW = 24 * 3600.0  # older failures are not mailed at start-up


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """Where and how failure emails are sent (`notifications.email`)."""

    host: str
    recipients: tuple[str, ...]
    port: int = 587
    tls: Literal["starttls", "ssl", "none"] = "starttls"
    user: str | None = None
    password: str | None = None
    sender: str = "partitur@localhost"
    timeout: float = 10.0


def send_message(config: SmtpConfig, message: EmailMessage) -> None:
    """Deliver `message` to the configured SMTP server (blocking)."""
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if config.tls == "ssl":
        smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout,
                                context=context)
    else:
        smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    with smtp:
        smtp.ehlo()
        if config.tls == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
        if config.user:
            smtp.login(config.user, config.password or "")
        smtp.send_message(message, from_addr=config.sender, to_addrs=list(config.recipients))


def compose(report: Mapping[str, Any], config: SmtpConfig, *, now: float) -> EmailMessage:
    """The failure email of a debug report: diagnosis, links and the handoff prompt."""
    job_id = str(report["job_id"])
    workflow = report.get("job_workflow") or "?"
    message = EmailMessage()
    tldr = str(report.get("tldr") or report.get("error") or "the job failed")
    first = tldr.splitlines()[0]
    message["Subject"] = f"[Partitur] {workflow} failed: " + (
        first if len(first) <= 120 else first[:117] + "...")
    message["From"] = config.sender
    message["To"] = ", ".join(config.recipients)
    message["Date"] = formatdate(now, usegmt=True)
    message["Message-ID"] = f"<failure.{job_id}@partitur>"
    message["X-Partitur-Job"] = job_id
    links = [(label, report.get(key)) for label, key in (
        ("Recording", "recording_url"), ("Screenshot", "screenshot_url"),
        ("DOM snapshot", "dom_snapshot_url"), ("Network log", "network_url"),
        ("Console log", "console_url"), ("Debug report", "report_url"))]
    links = [(label, url) for label, url in links if url]
    lines = [f"Job {job_id} of workflow {workflow} (workspace "
             f"{report.get('job_workspace') or '?'}) failed.", "",
             f"Diagnosis: {tldr}", f"Error: {report.get('error') or report.get('job_error')}"]
    if links:
        lines += ["", "Links:"] + [f"  {label}: {url}" for label, url in links]
    if report.get("handoff_prompt"):
        lines += ["", "Handoff prompt (paste it to whoever fixes the workflow):", "",
                  str(report["handoff_prompt"])]
    message.set_content("\n".join(lines) + "\n")
    items = "".join(f'<li><a href="{html.escape(str(url))}">{label}</a></li>'
                    for label, url in links)
    message.add_alternative(
        f"<p>Job <code>{html.escape(job_id)}</code> of workflow "
        f"<b>{html.escape(str(workflow))}</b> failed.</p>"
        f"<p><b>Diagnosis:</b> {html.escape(tldr)}</p>"
        + (f"<ul>{items}</ul>" if items else "")
        + (f"<p><b>Handoff prompt</b></p><pre>{html.escape(str(report['handoff_prompt']))}"
           "</pre>" if report.get("handoff_prompt") else ""),
        subtype="html")
    return message


async def sent_at(repo: CloudRepository, job_id: str) -> str | None:
    """When the failure email of `job_id` was sent (ISO 8601), or None."""
    obj = await repo.get(EMAIL, job_id)
    if obj is None or obj.data.get("status") != SENT:
        return None
    return iso(obj.data.get("sent_at"))


class FailureMailer:
    """Sends the failure email of each failed browser job once; see the module docstring."""

    def __init__(self, config: SmtpConfig, store: EventStore, repo: CloudRepository,
                 artifacts_dir: Path, *, base_url: str = "", clock: Clock | None = None,
                 sender: Any = send_message,
                 recording: Callable[[str, str], str] | None = None) -> None:
        self.config = config
        self.store = store
        self.repo = repo
        self.artifacts_dir = artifacts_dir
        self.base_url = base_url.rstrip("/")
        self.clock: Clock = clock or SystemClock()
        self._send = sender
        self._recording = recording
        self._pending: set[asyncio.Task[Any]] = set()

    def listener(self, state: JobState, events: Sequence[ev.Event]) -> None:
        """`Orchestrator.on_events`: mail about a job that just failed."""
        if not any(isinstance(e, ev.JobFailed) for e in events):
            return
        task = asyncio.ensure_future(self._guarded(state.job_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _guarded(self, job_id: str) -> None:
        try:
            await self.notify(job_id)
        except Exception:
            log.exception("failure email of job %s", job_id)

    async def drain(self) -> None:
        """Wait for the emails being sent (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def notify(self, job_id: str) -> str | None:
        """Send the email of failed job `job_id` unless it was claimed already.

        Returns the `sent_at` timestamp (ISO 8601) of this call's delivery, or None when
        the job needs no email, another call has claimed it, or delivery failed.
        """
        row = await self.store.get_job(job_id)
        if row is None or row.status != "failed":
            return None
        steps = await self.store.get_steps(job_id)
        if not any(s.action_type == "browser" for s in steps):
            return None
        claim = await self._claim(job_id)
        if claim is None:
            return None
        report = build_report(row, steps, self.artifacts_dir / job_id, base_url=self.base_url,
                              recording=self._recording)
        if self.base_url:
            report["report_url"] = f"{self.base_url}/api/jobs/{job_id}/debug-report"
        now = self.clock.now()
        message = compose(report, self.config, now=now)
        attempts = int(claim.data.get("attempts", 0)) + 1
        try:
            await asyncio.to_thread(self._send, self.config, message)
        except (OSError, smtplib.SMTPException) as exc:
            log.warning("failure email of job %s not sent: %s", job_id, exc)
            await self.repo.update(claim.changed(self.clock.now(), status=FAILED,
                                                 attempts=attempts, error=str(exc)))
            return None
        done = self.clock.now()
        await self.repo.update(claim.changed(done, status=SENT, sent_at=done,
                                             attempts=attempts, error=None,
                                             recipients=list(self.config.recipients)))
        return iso(done)

    async def _claim(self, job_id: str) -> CloudObject | None:
        now = self.clock.now()
        obj = CloudObject(EMAIL, job_id, TENANT, now, now,
                          {"status": SENDING, "attempts": 0, "sent_at": None})
        try:
            await self.repo.insert(obj)
            return obj
        except Conflict:
            pass
        # Claimed before: retry only a delivery that failed (a few times).
        existing = await self.repo.get(EMAIL, job_id)
        if existing is None or existing.data.get("status") != FAILED \
                or int(existing.data.get("attempts", 0)) >= MAX_ATTEMPTS:
            return None
        retry = existing.changed(now, status=SENDING)
        return retry if await self.repo.update(retry) else None

    async def catch_up(self) -> int:
        """Mail the jobs failed in the last day that a stopped server left without email.

        A claim still `sending` was cut off by a crash and is retried as failed.
        """
        count = 0
        for obj in await self.repo.all(EMAIL, None, cap=CATCH_UP_JOBS):
            if obj.data.get("status") == SENDING:
                await self.repo.update(obj.changed(self.clock.now(), status=FAILED))
        since = self.clock.now() - CATCH_UP_WINDOW
        rows, _ = await self.store.list_jobs(JobFilter(status=("failed",), since=since,
                                                       limit=CATCH_UP_JOBS))
        for row in rows:
            with contextlib.suppress(Exception):
                if await self.notify(row.job_id) is not None:
                    count += 1
        return count
