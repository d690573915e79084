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
    """Collects console errors and page errors of a page; `check()` fails on any.

    Chromium logs every HTTP error answer of a fetch as a console error. A test that
    provokes one on purpose (a wrong password, a revoked token) names it with
    `expect_failed_request`; `check()` then also fails when it never happened.
    """

    errors: list[str] = field(default_factory=list)
    expected: dict[tuple[str, int], int] = field(default_factory=dict)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def expect_failed_request(self, url_part: str, status: int) -> None:
        """Allow (and require) HTTP `status` answers to requests whose URL has `url_part`."""
        self.expected.setdefault((url_part, status), 0)

    def _console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        url = str((msg.location or {}).get("url", ""))
        for (part, status), seen in self.expected.items():
            if f"status of {status} " in msg.text and part in url:
                self.expected[(part, status)] = seen + 1
                return
        self.errors.append(f"console.error: {msg.text} @ {msg.location}")

    def check(self) -> None:
        assert self.errors == [], "\n".join(self.errors)
        missing = [f"{status} from {part}" for (part, status), n in self.expected.items()
                   if n == 0]
        assert missing == [], f"expected failed requests did not happen: {missing}"
