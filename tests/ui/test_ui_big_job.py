"""The job page with a 1,000-step job: it renders quickly, keeps painting while the job
runs and the live stream pours step frames in, and shows a cancel of the rest."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import ServerProcess
from playwright.sync_api import expect, sync_playwright
from uikit import CHROMIUM_ARGS, ConsoleGuard

pytestmark = pytest.mark.browser
expect.set_options(timeout=20_000)

COLUMNS, ROWS = 20, 50  # 1,000 steps: 20 layers of 50, each step after its left neighbour


def write_workspace(root: Path) -> Path:
    lines = ["tasks:", "  big:", "    flow:"]
    for col in range(COLUMNS):
        # The last layer waits, so the job is still running when the test cancels it.
        script = "sleep 600" if col == COLUMNS - 1 else "echo ok"
        for row in range(ROWS):
            lines += [f"      s{col:02d}-{row:02d}:", "        type: shell",
                      "        interpreter: sh", f"        script: {script}"]
            if col:
                lines.append(f"        depends_on: [s{col - 1:02d}-{row:02d}]")
    folder = root / ".workflows"
    folder.mkdir(parents=True)
    (folder / "big.yaml").write_text("\n".join(lines) + "\n", "utf-8")
    return root


@pytest.fixture
def big_server(make_server: object, tmp_path: Path) -> Iterator[ServerProcess]:
    ws = write_workspace(tmp_path / "big-ws")
    server: ServerProcess = make_server(  # type: ignore[operator]
        workspaces={"big": ws}, settings={"workers": {"local": {"concurrency": 8}}})
    yield server


def test_a_thousand_step_job_renders_without_freezing(
        big_server: ServerProcess, chromium_path: str) -> None:
    response = httpx.post(f"{big_server.url}/api/workspaces/big/tasks/big/execute",
                          json={"input": {}}, timeout=10)
    job_id = response.json()["job_id"]
    guard = ConsoleGuard()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            guard.attach(page)
            # Record the longest task of the page's main thread (the Long Tasks API), and,
            # for the message, the longest gap between animation frames.
            page.add_init_script("""
                window.__longestTask = 0;
                new PerformanceObserver((list) => {
                  for (const e of list.getEntries()) {
                    window.__longestTask = Math.max(window.__longestTask, e.duration);
                  }
                }).observe({type: "longtask", buffered: true});
                window.__maxGap = 0;
                let last = performance.now();
                const tick = (now) => {
                  window.__maxGap = Math.max(window.__maxGap, now - last);
                  last = now; requestAnimationFrame(tick);
                };
                requestAnimationFrame(tick);
            """)
            started = time.monotonic()
            page.goto(f"{big_server.url}/jobs/{job_id}")
            expect(page.locator("#dag g.node")).to_have_count(COLUMNS * ROWS)
            expect(page.locator("#steps tbody tr")).to_have_count(COLUMNS * ROWS)
            rendered = time.monotonic() - started
            assert rendered < 10, f"first render took {rendered:.1f}s"
            # From here on, the live phase: the first render is bounded above.
            page.evaluate("window.__longestTask = 0; window.__maxGap = 0")
            # Live: steps complete on screen while the page keeps painting.
            page.wait_for_function(
                "document.querySelectorAll('#dag g.node[data-status=completed]').length >= 150",
                timeout=30_000)
            page.locator('#dag g.node[data-step="s00-07"]').click()
            expect(page.locator("#detail")).to_contain_text("s00-07")
            expect(page.locator("#detail")).to_contain_text("completed")
            # A page frozen by its own work while the stream pours in (quadratic updates,
            # a flush that rebuilds everything per frame) runs one task for many seconds.
            # The gap between painted frames is not the measure: on a loaded 2-core
            # machine an idle page misses frames for seconds (4.2 s seen in a full test
            # run), its tasks do not.
            longest = page.evaluate("window.__longestTask")
            max_gap = page.evaluate("window.__maxGap")
            assert longest < 4000, (f"the page froze: a task ran {longest:.0f} ms "
                                    f"(longest gap between frames {max_gap:.0f} ms)")
            # Cancel the rest: every remaining step turns cancelled, live.
            page.get_by_role("button", name="Cancel").click()
            expect(page.locator("#job-status")).to_have_text("cancelled")
            expect(page.locator('#dag g.node[data-status="pending"]')).to_have_count(0)
            expect(page.locator('#dag g.node[data-status="cancelled"]').first).to_be_visible()
        finally:
            browser.close()
    guard.check()
