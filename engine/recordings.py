"""Recordings: signed, expiring recording URLs and the retention sweep.

A recording is a browser step's Playwright trace (`trace.zip`, and `video.webm` when it
was recorded) among the job's artifacts. `UrlSigner` signs a path with an expiry (HMAC-
SHA256 with a server secret), so a recording can be opened by whoever holds the link —
without credentials, and only until it expires — from `/recordings/<job>/<step>/<file>`
(server.recording_files). `recording_link` returns the trace viewer URL around such a
signed trace URL, and its expiry.

`sweep_recordings` deletes recording files older than the retention period;
`RetentionSweeper` runs it periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlencode

from engine.views import iso

log = logging.getLogger("partitur.recordings")

RECORDING_FILES = ("trace.zip", "video.webm")
PREFIX = "/recordings"
DEFAULT_TTL = 3600.0
_LABEL = b"partitur recordings v1"


def recordings_secret(secrets_key: str | None, data_dir: Path) -> bytes:
    """The signing secret: derived from `secrets_key`, else kept in `<data>/recordings.key`."""
    if secrets_key:
        return hmac.new(secrets_key.encode(), _LABEL, hashlib.sha256).digest()
    path = data_dir / "recordings.key"
    with contextlib.suppress(FileNotFoundError):
        return bytes.fromhex(path.read_text("ascii").strip())
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return bytes.fromhex(path.read_text("ascii").strip())
    with os.fdopen(fd, "w") as out:
        out.write(key.hex())
    return key


class UrlSigner:
    """HMAC-SHA256 signatures of `(path, expiry)` pairs."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("a signing secret needs at least 16 bytes")
        self._secret = secret

    def signature(self, path: str, expires: int) -> str:
        """The hex signature of `path` valid until `expires` (epoch seconds)."""
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def sign(self, path: str, expires: int) -> str:
        """`path?expires=…&sig=…`."""
        query = urlencode({"expires": expires, "sig": self.signature(path, expires)})
        return f"{path}?{query}"

    def verify(self, path: str, expires: str | None, sig: str | None, now: float) -> bool:
        """Whether `sig` signs `path` until `expires`, and `now` is before it."""
        if not expires or not sig or not expires.isdigit():
            return False
        if int(expires) < now:
            return False
        return hmac.compare_digest(self.signature(path, int(expires)), sig)


def recording_path(job_id: str, step: str, name: str = "trace.zip") -> str:
    """The path (unsigned) under which a recording file is served."""
    return f"{PREFIX}/{quote(job_id, safe='')}/{quote(step, safe='')}/{quote(name)}"


def find_recording(job_artifacts: Path, steps: list[str] | None = None) -> str | None:
    """The first step (in `steps` order, else by name) with a `trace.zip`, or None."""
    names = steps if steps is not None else (
        sorted(p.name for p in job_artifacts.iterdir() if p.is_dir())
        if job_artifacts.is_dir() else [])
    for step in names:
        if (job_artifacts / step / "trace.zip").is_file():
            return step
    return None


def recording_link(signer: UrlSigner, base_url: str, job_id: str, step: str, *,
                   ttl: float = DEFAULT_TTL, now: float | None = None,
                   viewer: str = "/trace/") -> tuple[str, str]:
    """`(recording_url, recording_url_expires_at)`: the trace viewer opening a signed,
    expiring link to the step's `trace.zip`. Ask again for a fresh one."""
    expires = int((time.time() if now is None else now) + ttl)
    trace = base_url.rstrip("/") + signer.sign(recording_path(job_id, step), expires)
    url = f"{base_url.rstrip('/')}{viewer}index.html?trace={quote(trace, safe='')}"
    expires_at = iso(float(expires))
    assert expires_at is not None
    return url, expires_at


def sweep_recordings(artifacts_dir: Path, retention_days: float, now: float) -> int:
    """Delete recording files older than `retention_days`; returns how many.

    Only `<job>/<step>/trace.zip` and `video.webm` are removed; the rest of a job's
    artifacts (failure evidence, outputs) stays, and so does the job.
    """
    if retention_days <= 0 or not artifacts_dir.is_dir():
        return 0
    cutoff = now - retention_days * 86400
    removed = 0
    for job in artifacts_dir.iterdir():
        if not job.is_dir():
            continue
        for step in job.iterdir():
            for name in RECORDING_FILES:
                path = step / name
                try:
                    if path.is_file() and path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except OSError as exc:
                    log.warning("recording %s not removed: %s", path, exc)
    return removed


class RetentionSweeper:
    """Runs `sweep_recordings` every `interval` seconds in the background."""

    def __init__(self, artifacts_dir: Path, retention_days: float, interval: float, *,
                 now: Callable[[], float] = time.time) -> None:
        self.artifacts_dir = artifacts_dir
        self.retention_days = retention_days
        self.interval = interval
        self._now = now
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self.retention_days > 0:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self) -> int:
        """One sweep now (off the event loop)."""
        return await asyncio.to_thread(sweep_recordings, self.artifacts_dir,
                                       self.retention_days, self._now())

    async def _run(self) -> None:
        while True:
            try:
                removed = await self.sweep()
                if removed:
                    log.info("retention: removed %d recordings", removed)
            except Exception:
                log.exception("recording retention sweep")
            await asyncio.sleep(self.interval)
