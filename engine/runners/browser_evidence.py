"""What a browser step keeps as evidence: console and network logs, failure files, trace.

Used inside the browser driver process. `ConsoleLog` and `NetworkLog` listen to a
Playwright context from the start; on failure `write_failure_evidence` saves, under
`<artifacts>/failure/`, a full-page screenshot (`screenshot.png`), the DOM
(`dom.html`), the console (`console.log`), the last network requests (`network.jsonl`:
method, url, status, timing) and the error (`error.json`: message, step index, line,
URL, last actions). Every text file and the trace are scrubbed of the step's known
secret values first (`scrub_zip`), since a trace records what was typed and sent.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import time
import zipfile
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from engine.logs.redact import Redactor

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, ConsoleMessage, Page, Request

FAILURE_DIR = "failure"
SCREENSHOT = f"{FAILURE_DIR}/screenshot.png"
DOM = f"{FAILURE_DIR}/dom.html"
CONSOLE = f"{FAILURE_DIR}/console.log"
NETWORK = f"{FAILURE_DIR}/network.jsonl"
ERROR = f"{FAILURE_DIR}/error.json"
TRACE = "trace.zip"
VIDEO = "video.webm"
NETWORK_KEEP = 200
CONSOLE_KEEP = 1000


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class ConsoleLog:
    """Console messages and page errors, in order, each also sent to `emit` (the log)."""

    def __init__(self, emit: Callable[[str, str], None]) -> None:
        self.lines: deque[str] = deque(maxlen=CONSOLE_KEEP)
        self._emit = emit

    def attach(self, page: Page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)

    def _on_console(self, message: ConsoleMessage) -> None:
        text = f"[console.{message.type}] {message.text}"
        self.lines.append(text)
        if str(message.type) != "verbose":  # Chromium's own DOM hints: evidence only
            self._emit("stderr" if message.type in ("error", "warning") else "stdout", text)

    def _on_page_error(self, error: Exception) -> None:
        text = f"[pageerror] {error}"
        self.lines.append(text)
        self._emit("stderr", text)


class NetworkLog:
    """The last `NETWORK_KEEP` requests of a context: method, url, status, timing."""

    def __init__(self) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=NETWORK_KEEP)
        self._open: dict[int, dict[str, Any]] = {}

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._on_request)
        context.on("requestfinished", self._on_finished)
        context.on("requestfailed", self._on_failed)

    def _on_request(self, request: Request) -> None:
        entry: dict[str, Any] = {
            "method": request.method, "url": request.url, "status": None,
            "resource_type": request.resource_type, "started_at": _iso(time.time()),
            "duration_ms": None, "failure": None,
        }
        self._open[id(request)] = entry
        self.entries.append(entry)

    def _close(self, request: Request) -> dict[str, Any] | None:
        entry = self._open.pop(id(request), None)
        if entry is not None:
            timing = request.timing
            end = timing.get("responseEnd", -1)
            if end is not None and end >= 0:
                entry["duration_ms"] = round(end, 1)
        return entry

    async def _on_finished(self, request: Request) -> None:
        entry = self._close(request)
        if entry is not None:
            with contextlib.suppress(Exception):
                response = await request.response()
                if response is not None:
                    entry["status"] = response.status

    def _on_failed(self, request: Request) -> None:
        entry = self._close(request)
        if entry is not None:
            entry["failure"] = request.failure or "failed"


async def write_failure_evidence(
    page: Page | None,
    artifacts_dir: Path,
    error: dict[str, Any],
    console: ConsoleLog,
    network: NetworkLog,
    redactor: Redactor,
    log: Callable[[str], None],
) -> None:
    """Save the failure files (see the module docstring); each one is best effort."""
    folder = artifacts_dir / FAILURE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    if page is not None and not page.is_closed():
        error.setdefault("url", page.url)
        with contextlib.suppress(Exception):
            error["title"] = await page.title()
        try:
            await page.screenshot(path=artifacts_dir / SCREENSHOT, full_page=True, timeout=10_000)
        except Exception as exc:
            log(f"evidence: no screenshot ({_first_line(exc)})")
        try:
            html = await page.content()
            (artifacts_dir / DOM).write_text(redactor.redact(html), encoding="utf-8")
        except Exception as exc:
            log(f"evidence: no DOM snapshot ({_first_line(exc)})")
    (artifacts_dir / CONSOLE).write_text(
        redactor.redact("".join(line + "\n" for line in console.lines)), encoding="utf-8")
    (artifacts_dir / NETWORK).write_text(
        redactor.redact("".join(orjson.dumps(e).decode() + "\n" for e in network.entries)),
        encoding="utf-8")
    (artifacts_dir / ERROR).write_text(
        redactor.redact(orjson.dumps(error, option=orjson.OPT_INDENT_2).decode()),
        encoding="utf-8")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def scrub_zip(path: Path, redactor: Redactor) -> None:
    """Rewrite the zip at `path` with the secrets masked in every text member."""
    if not redactor or not path.is_file():
        return
    tmp = path.with_suffix(".scrub")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                dst.writestr(info, data)
                continue
            dst.writestr(info, redactor.redact(text).encode("utf-8"))
    os.replace(tmp, path)


def playwright_ffmpeg() -> str | None:
    """Playwright's ffmpeg build (what its video recorder runs), or None if not installed."""
    roots = [os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or "",
             str(Path.home() / ".cache" / "ms-playwright")]
    for root in filter(None, roots):
        for candidate in sorted(glob.glob(os.path.join(root, "ffmpeg-*", "ffmpeg-linux"))):
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def default_executable() -> str:
    """Playwright's own Chromium when it is installed, else the system's."""
    roots = [os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or "",
             str(Path.home() / ".cache" / "ms-playwright")]
    for root in filter(None, roots):
        found = sorted(glob.glob(os.path.join(root, "chromium-*", "chrome-linux*", "chrome")))
        if found and os.access(found[-1], os.X_OK):
            return found[-1]
    return shutil.which("chromium") or "/usr/bin/chromium"
