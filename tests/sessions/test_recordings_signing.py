"""Signed, expiring recording links and the retention sweep."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from harness import ServerProcess

from engine.recordings import (
    UrlSigner,
    find_recording,
    recording_link,
    recording_path,
    recordings_secret,
    sweep_recordings,
)


def test_signature_expires_and_binds_the_path() -> None:
    signer = UrlSigner(b"s" * 32)
    path = recording_path("job-1", "login")
    signed = signer.sign(path, 1_000)
    query = parse_qs(urlsplit(signed).query)
    expires, sig = query["expires"][0], query["sig"][0]
    assert signer.verify(path, expires, sig, now=999)
    assert not signer.verify(path, expires, sig, now=1_001)  # expired
    assert not signer.verify(recording_path("job-2", "login"), expires, sig, now=999)
    assert not signer.verify(path, "2000", sig, now=999)  # expiry moved
    assert not UrlSigner(b"t" * 32).verify(path, expires, sig, now=999)
    assert not signer.verify(path, None, None, now=0)


def test_recording_link_wraps_a_signed_trace_url(tmp_path: Path) -> None:
    signer = UrlSigner(recordings_secret("key", tmp_path))
    url, expires_at = recording_link(signer, "http://h:1", "job-1", "login", ttl=60, now=0)
    assert url.startswith("http://h:1/trace/index.html?trace=")
    trace = unquote(url.split("trace=", 1)[1])
    assert trace.startswith("http://h:1/recordings/job-1/login/trace.zip?expires=60&sig=")
    assert expires_at == "1970-01-01T00:01:00Z"
    # Without a secrets_key, one generated key is kept and reused.
    first = recordings_secret(None, tmp_path)
    assert recordings_secret(None, tmp_path) == first and len(first) == 32


def test_retention_removes_old_recordings_only(tmp_path: Path) -> None:
    old = tmp_path / "job-old" / "login"
    new = tmp_path / "job-new" / "login"
    for folder in (old, new):
        (folder / "failure").mkdir(parents=True)
        (folder / "trace.zip").write_bytes(b"PK")
        (folder / "failure" / "screenshot.png").write_bytes(b"png")
    now = 100 * 86400.0
    os.utime(old / "trace.zip", (now - 31 * 86400, now - 31 * 86400))
    os.utime(new / "trace.zip", (now - 29 * 86400, now - 29 * 86400))
    assert find_recording(tmp_path / "job-old") == "login"
    assert sweep_recordings(tmp_path, 30, now) == 1
    assert not (old / "trace.zip").exists() and (new / "trace.zip").exists()
    assert (old / "failure" / "screenshot.png").exists()  # evidence stays
    assert find_recording(tmp_path / "job-old") is None
    assert sweep_recordings(tmp_path, 0, now) == 0  # 0 keeps forever


def test_a_server_enforces_the_configured_retention(
        make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(start=False, settings={
        "recordings": {"retention_days": 2, "sweep_interval": "200ms"}})
    artifacts = server.tmp_dir / "artifacts"
    old, new = artifacts / "job-old" / "login", artifacts / "job-new" / "login"
    for folder in (old, new):
        (folder / "failure").mkdir(parents=True)
        for name in ("trace.zip", "video.webm", "failure/screenshot.png"):
            (folder / name).write_bytes(b"x")
    three_days_ago = time.time() - 3 * 86400
    for name in ("trace.zip", "video.webm"):
        os.utime(old / name, (three_days_ago, three_days_ago))
    os.utime(new / "trace.zip", (time.time() - 86400,) * 2)  # within the 2 days
    server.start()
    deadline = time.monotonic() + 20
    while (old / "trace.zip").exists() or (old / "video.webm").exists():
        assert time.monotonic() < deadline, "the server kept recordings past their retention"
        time.sleep(0.1)
    assert (new / "trace.zip").exists() and (new / "video.webm").exists()
    assert (old / "failure" / "screenshot.png").exists()  # evidence stays
