"""Helpers of the browser tests: Chromium launch options and a console-error guard."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]


@dataclass
class ConsoleGuard:
    """Collects console errors and page errors of a page; `check()` fails on any."""

    errors: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(f"console.error: {msg.text} @ {msg.location}")

    def check(self) -> None:
        assert self.errors == [], "\n".join(self.errors)
