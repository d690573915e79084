"""Failure emails against a real SMTP server (aiosmtpd on loopback)."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from harness import ServerProcess, free_port

from engine.notify_email import EMAIL, SENT, FailureMailer, SmtpConfig, sent_at
from engine.runtime import Runtime, RuntimeOptions
from engine.store.cloud import CloudRepository, cloud_repository_for

WORKFLOWS = """
actions:
  broken-browser:
    type: browser
    steps: [{ frobnicate: "#x" }]
  fail-shell:
    type: shell
    script: exit 3
tasks:
  scrape:
    flow:
      open: { action: broken-browser }
  plain:
    flow:
      boom: { action: fail-shell }
"""


@dataclass
class Inbox:
    """What the SMTP server received."""

    messages: list[tuple[Envelope, EmailMessage]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))
        return "250 OK"

    def __call__(self, server: Any, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        ok = auth_data.login == b"bot" and auth_data.password == b"pw"
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox,
                            auth_required=False, auth_require_tls=False)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    (folder / ".workflows").mkdir(parents=True)
    (folder / ".workflows" / "w.yaml").write_text(WORKFLOWS)
    return folder


def _options(tmp_path: Path, workspace: Path) -> RuntimeOptions:
    return RuntimeOptions(db_url=f"sqlite:///{tmp_path / 'p.db'}", logs_dir=tmp_path / "logs",
                          artifacts_dir=tmp_path / "artifacts", workspaces={"ws": workspace},
                          concurrency=2, base_dir=tmp_path)


@pytest.fixture
async def runtime(tmp_path: Path, workspace: Path) -> AsyncIterator[Runtime]:
    rt = Runtime(_options(tmp_path, workspace))
    await rt.open()
    try:
        yield rt
    finally:
        await rt.close()


def _config(port: int, **extra: Any) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, tls="none", sender="bot@partitur.test",
                      recipients=("ops@example.test", "dev@example.test"), **extra)


def _mailer(rt: Runtime, repo: CloudRepository, port: int, **extra: Any) -> FailureMailer:
    mailer = FailureMailer(_config(port, **extra), rt.store, repo, rt.options.artifacts_dir,
                           base_url="http://partitur.test")
    rt.orchestrator.on_events(mailer.listener)
    return mailer


async def _run(rt: Runtime, task: str) -> str:
    job_id = await rt.orchestrator.create_job("ws", task, {})
    state = await rt.orchestrator.wait(job_id, timeout=20)
    assert state.status.value == "failed"
    return job_id


async def test_failed_browser_job_sends_one_email_with_report_and_links(
        runtime: Runtime, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    repo = cloud_repository_for(runtime.store)
    mailer = _mailer(runtime, repo, port, user="bot", password="pw")
    job_id = await _run(runtime, "scrape")
    await mailer.drain()

    assert len(inbox.messages) == 1
    envelope, message = inbox.messages[0]
    assert envelope.mail_from == "bot@partitur.test"
    assert sorted(envelope.rcpt_tos) == ["dev@example.test", "ops@example.test"]
    assert inbox.logins == ["bot"]
    assert message["Subject"].startswith("[Partitur] scrape failed: ")
    assert message["Message-ID"] == f"<failure.{job_id}@partitur>"
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "frobnicate" in text
    assert f"http://partitur.test/api/jobs/{job_id}/debug-report" in text
    assert "Handoff prompt" in text and "A Partitur browser workflow failed" in text
    assert message.get_body(("html",)) is not None
    # Recorded, and a second notify sends nothing.
    stamp = await sent_at(repo, job_id)
    assert stamp is not None and stamp.endswith("Z")
    assert await mailer.notify(job_id) is None
    assert len(inbox.messages) == 1


async def test_no_email_for_a_job_without_a_browser_step(
        runtime: Runtime, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    repo = cloud_repository_for(runtime.store)
    mailer = _mailer(runtime, repo, port)
    job_id = await _run(runtime, "plain")
    await mailer.drain()
    assert inbox.messages == []
    assert await repo.get(EMAIL, job_id) is None


async def test_exactly_once_across_restarts(tmp_path: Path, workspace: Path,
                                            smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    # A job fails while the server has no mailer attached (it stops before mailing).
    first = Runtime(_options(tmp_path, workspace))
    await first.open()
    unsent = await _run(first, "scrape")
    await first.close()
    # Restarted with email configured: catch-up sends it, once.
    second = Runtime(_options(tmp_path, workspace))
    await second.open()
    try:
        mailer = _mailer(second, cloud_repository_for(second.store), port)
        assert await mailer.catch_up() == 1
        assert [m["X-Partitur-Job"] for _, m in inbox.messages] == [unsent]
    finally:
        await second.close()
    # Restarted again: nothing more is sent.
    third = Runtime(_options(tmp_path, workspace))
    await third.open()
    try:
        repo = cloud_repository_for(third.store)
        mailer = _mailer(third, repo, port)
        assert await mailer.catch_up() == 0
        assert len(inbox.messages) == 1
        claim = await repo.get(EMAIL, unsent)
        assert claim is not None and claim.data["status"] == SENT
    finally:
        await third.close()


async def test_unreachable_smtp_is_recorded_and_retried(
        runtime: Runtime, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    repo = cloud_repository_for(runtime.store)
    dead = FailureMailer(_config(free_port(), timeout=2.0), runtime.store, repo,
                         runtime.options.artifacts_dir)
    runtime.orchestrator.on_events(dead.listener)
    job_id = await _run(runtime, "scrape")
    await dead.drain()
    claim = await repo.get(EMAIL, job_id)
    assert claim is not None and claim.data["status"] == "failed" and claim.data["error"]
    assert await sent_at(repo, job_id) is None
    # The SMTP server is reachable again: the retry delivers it.
    live = FailureMailer(_config(port), runtime.store, repo, runtime.options.artifacts_dir)
    assert await live.notify(job_id) is not None
    assert len(inbox.messages) == 1


def test_a_server_mails_each_failed_browser_job_once(
        make_server: Callable[..., ServerProcess], workspace: Path,
        smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    server = make_server(workspaces={"ws": workspace}, settings={"notifications": {
        "base_url": "http://partitur.example",
        "email": {"host": "127.0.0.1", "port": port, "tls": "none", "user": "bot",
                  "password": "pw", "from": "bot@partitur.test",
                  "recipients": ["ops@example.test"]}}})

    def failed(client: httpx.Client, task: str) -> str:
        job_id: str = client.post(f"/api/workspaces/ws/tasks/{task}/execute",
                                  json={"input": {}}).json()["job_id"]
        deadline = time.monotonic() + 30
        while client.get(f"/api/jobs/{job_id}").json()["status"] != "failed":
            assert time.monotonic() < deadline, f"{task} did not fail"
            time.sleep(0.1)
        return job_id

    with httpx.Client(base_url=server.url, timeout=10) as client:
        plain = failed(client, "plain")
        job_id = failed(client, "scrape")
        deadline = time.monotonic() + 30
        while (report := client.get(f"/api/jobs/{job_id}/debug-report").json())[
                "email_sent_at"] is None:
            assert time.monotonic() < deadline, "no email_sent_at"
            time.sleep(0.1)
        assert report["email_sent_at"].endswith("Z")
        assert client.get(f"/api/jobs/{plain}/debug-report").json()["email_sent_at"] is None
    assert [m["X-Partitur-Job"] for _, m in inbox.messages] == [job_id]
    assert inbox.logins == ["bot"]
    body = inbox.messages[0][1].get_body(("plain",))
    assert body is not None
    assert f"http://partitur.example/api/jobs/{job_id}/debug-report" in body.get_content()
    # A restart catches up on nothing: the job was mailed once.
    server.restart()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        again = client.get(f"/api/jobs/{job_id}/debug-report").json()
        assert again["email_sent_at"] == report["email_sent_at"]
    assert len(inbox.messages) == 1


LIVE_BROWSER = """
tasks:
  blank:
    flow:
      look:
        type: browser
        launch: { start_url: "data:text/html,<p>nothing here</p>", timeout: 2s }
        steps:
          - wait_for: "#never"
"""


def test_the_emails_recording_link_is_signed_and_opens_without_a_login(
        make_server: Callable[..., ServerProcess], tmp_path: Path, chromium_path: str,
        smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    folder = tmp_path / "live"
    (folder / ".workflows").mkdir(parents=True)
    (folder / ".workflows" / "w.yaml").write_text(LIVE_BROWSER)
    server = make_server(workspaces={"ws": folder}, settings={
        "browser": {"executable": chromium_path},
        "notifications": {"base_url": "http://partitur.example", "email": {
            "host": "127.0.0.1", "port": port, "tls": "none",
            "recipients": ["ops@example.test"]}}})
    with httpx.Client(base_url=server.url, timeout=10) as client:
        job_id = client.post("/api/workspaces/ws/tasks/blank/execute",
                             json={"input": {}}).json()["job_id"]
        deadline = time.monotonic() + 60
        while not inbox.messages:
            assert time.monotonic() < deadline, "no failure email"
            time.sleep(0.1)
    body = inbox.messages[0][1].get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert job_id in text
    # Signed for notifications.email.link_ttl (7 days by default): it needs no login.
    viewer = re.search(r"Recording[^:]*: (\S+)", text)
    assert viewer is not None, text
    trace = unquote(viewer.group(1).split("trace=", 1)[1])
    expires = int(parse_qs(urlsplit(trace).query)["expires"][0])
    assert expires > time.time() + 6 * 86400
    r = httpx.get(trace.replace("http://partitur.example", server.url), timeout=10)
    assert r.status_code == 200 and r.content[:2] == b"PK"
    forged = trace.replace("sig=", "sig=0")
    r = httpx.get(forged.replace("http://partitur.example", server.url), timeout=10)
    assert r.status_code == 403
