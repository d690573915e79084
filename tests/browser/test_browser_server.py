"""Browser steps behind the real server and CLI: debug report, artifacts, trace viewer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import playwright
from conftest import DEMO_WORKSPACE, ROOT, write_workspace
from harness import ServerProcess
from playwright.sync_api import sync_playwright

from server.traceviewer import viewer_dir

FAILING = """
    tasks:
      sign-in:
        input:
          site_url: { type: string, required: true }
        flow:
          login:
            type: browser
            input: { site_url: "<< input.site_url >>" }
            launch: { start_url: "<< input.site_url >>", timeout: 2s }
            steps:
              - fill: { selector: "#username", value: alice }
              - click: "#sign-in-button"
    """


def _wait(client: httpx.Client, job_id: str, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}"
        time.sleep(0.1)


def test_debug_report_links_open_over_http(
        tmp_path: Path, demo_site: str, chromium_path: str,
        make_server: Callable[..., ServerProcess]) -> None:
    ws = write_workspace(tmp_path / "ws", FAILING)
    server = make_server(workspaces={"ws": ws},
                         settings={"browser": {"executable": chromium_path}})
    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.post("/api/workspaces/ws/tasks/sign-in/execute",
                        json={"input": {"site_url": demo_site}})
        assert r.status_code == 200, r.text
        job_id = r.json()["job_id"]
        assert _wait(client, job_id)["status"] == "failed"

        report = client.get(f"/api/jobs/{job_id}/debug-report").json()
        assert report["analysis"]["kind"] == "missing_element"
        assert report["analysis"]["candidates"][0]["selector"] == "#sign-in"
        screenshot = client.get(report["screenshot_url"])
        assert screenshot.status_code == 200
        assert screenshot.headers["content-type"] == "image/png"
        dom = client.get(report["dom_snapshot_url"])
        assert dom.status_code == 200 and b'id="sign-in"' in dom.content
        assert client.get("/api/jobs/nope/debug-report").status_code == 404
        relative = client.get(f"/api/jobs/{job_id}/debug-report?base=relative").json()
        assert relative["recording_url"].startswith("/trace/index.html?trace=")

    # The recording opens in Playwright's trace viewer, served by Partitur itself from
    # the files of the Python package: no request leaves the server.
    assert (viewer_dir() / "index.html").is_file()
    assert viewer_dir().is_relative_to(Path(playwright.__file__).parent)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context()
            outside: list[str] = []
            context.on("request", lambda r: None if r.url.startswith(
                (server.url, "data:", "blob:")) else outside.append(r.url))
            context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"),
                          lambda route: (outside.append(route.request.url), route.abort()))
            page = context.new_page()
            page.goto(report["recording_url"])
            page.get_by_text("#sign-in-button").first.wait_for(timeout=15_000)
            assert outside == []
        finally:
            browser.close()


def test_partitur_run_drives_the_demo_workspace(demo_site: str, chromium_path: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARTITUR__")}
    env.update(PARTITUR_BROWSER_EXECUTABLE=chromium_path, DEMO_PASSWORD="wonderland")
    proc = subprocess.run(
        [sys.executable, "-m", "server.cli", "run", "export-orders", "--workspace",
         str(DEMO_WORKSPACE), "-i", f"site_url={demo_site}", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=50, check=False)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = json.loads(proc.stdout)
    assert job["status"] == "completed"
    steps = {s["step_name"]: s for s in job["steps"]}
    assert steps["export"]["output"]["order_ids"] == ["A-1001", "A-1002", "A-1003"]
    assert "wonderland" not in proc.stdout + proc.stderr
