"""The config sections of failure emails, debug, recordings and sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import ConfigInvalid
from server.config import load_settings


def test_email_section_reads_from_and_recipients(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("notifications:\n  email:\n    host: 127.0.0.1\n    port: 2525\n"
                    "    tls: none\n    from: bot@example.test\n"
                    "    recipients: [ops@example.test]\n")
    email = load_settings(path, environ={}).notifications.email
    assert email is not None
    assert (email.host, email.port, email.tls) == ("127.0.0.1", 2525, "none")
    assert email.sender == "bot@example.test"
    assert email.recipients == ["ops@example.test"]


def test_email_needs_recipients_and_a_known_tls(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("notifications:\n  email: {host: h, recipients: [], tls: maybe}\n")
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(path, environ={})
    paths = {issue.path for issue in caught.value.issues}
    assert "notifications.email.recipients" in paths
    assert "notifications.email.tls" in paths


def test_defaults_send_nothing_and_keep_recordings_30_days() -> None:
    settings = load_settings(None, environ={})
    assert settings.notifications.email is None
    assert settings.debug.llm is None and settings.debug.repair_task is None
    assert settings.recordings.retention_days == 30
    assert settings.sessions.max_per_tenant == 3


def test_password_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("notifications:\n  email: {host: h, recipients: [a@b.c]}\n")
    settings = load_settings(path, environ={
        "PARTITUR__NOTIFICATIONS__EMAIL__PASSWORD": "s3cret"})
    assert settings.notifications.email is not None
    assert settings.notifications.email.password == "s3cret"
    assert "s3cret" not in repr(settings)
