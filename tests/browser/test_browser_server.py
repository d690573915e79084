"""Browser steps behind the real server and CLI: debug report, artifacts, trace viewer."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import playwright
from browser_support import DEMO_WORKSPACE, ROOT, write_workspace
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
        assert relative["recording_url"].startswith("/trace/index.html?trace=%2Frecordings%2F")
        # The recording link is signed: the trace viewer needs no credential to open it.
        assert "%2Frecordings%2F" in report["recording_url"] and "sig%3D" in report[
            "recording_url"]

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
            # The job page links the step's trace to the same viewer.
            page.goto(f"{server.url}/jobs/{job_id}")
            link = page.get_by_role("link", name="Open trace.zip of login in the trace viewer")
            link.wait_for(timeout=15_000)
            href = link.get_attribute("href") or ""
            assert href.startswith(f"{server.url}/trace/index.html?trace=")
            page.goto(href)
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


def test_recording_links_are_signed_expire_and_need_no_token(
        tmp_path: Path, demo_site: str, chromium_path: str,
        make_server: Callable[..., ServerProcess]) -> None:
    admin = {"email": "admin@example.com", "password": "admin-password-1"}
    ws = write_workspace(tmp_path / "ws", FAILING)
    server = make_server(workspaces={"ws": ws}, settings={
        "browser": {"executable": chromium_path}, "auth": {"initial_user": admin},
        "recordings": {"url_ttl": "10s"}})
    with httpx.Client(base_url=server.url, timeout=10) as client:
        token = client.post("/api/auth/login", json=admin).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        r = client.post("/api/workspaces/ws/tasks/sign-in/execute",
                        json={"input": {"site_url": demo_site}})
        assert r.status_code == 200, r.text
        job_id = r.json()["job_id"]
        assert _wait(client, job_id)["status"] == "failed"
        report = client.get(f"/api/jobs/{job_id}/debug-report").json()
        listed = {a["name"]: a for a in client.get(f"/api/jobs/{job_id}/artifacts").json()}
        assert listed["trace.zip"]["viewer_url"].startswith(f"{server.url}/trace/index.html")
        assert "viewer_url" not in listed["failure/screenshot.png"]

    def trace_of(viewer_url: str) -> str:
        return parse_qs(urlsplit(viewer_url).query)["trace"][0]

    with httpx.Client(timeout=10) as anonymous:
        for viewer_url in (report["recording_url"], listed["trace.zip"]["viewer_url"]):
            trace = anonymous.get(trace_of(viewer_url))
            assert trace.status_code == 200, trace.text
            assert trace.content[:2] == b"PK"  # the zip, without any token
        # The /api artifact itself still needs one.
        assert anonymous.get(f"{server.url}/api/jobs/{job_id}/artifacts/trace.zip"
                             "?step=login").status_code == 401
        signed = trace_of(report["recording_url"])
        forged = re.sub(r"sig=[0-9a-f]+", "sig=" + "0" * 64, signed)
        assert anonymous.get(forged).status_code == 403
        other_step = signed.replace("/login/trace.zip", "/other/trace.zip")
        assert anonymous.get(other_step).status_code == 403
        # After recordings.url_ttl the link stops working.
        deadline = time.monotonic() + 60
        while anonymous.get(signed).status_code != 403:
            assert time.monotonic() < deadline, "the recording link did not expire"
            time.sleep(0.2)


RECORDED = """
tasks:
  look:
    flow:
      page:
        type: browser
        script: |
          await page.set_content("<h1 id=hello>recorded here</h1>")
          return {"title": await page.locator("#hello").inner_text()}
"""


def test_v1_recordings_get_gives_a_signed_expiring_link(
        chromium_path: str, make_server: Callable[..., ServerProcess]) -> None:
    server = make_server(settings={"browser": {"executable": chromium_path},
                                   "secrets_key": "k", "recordings": {"url_ttl": "15m"}})

    def v1(client: httpx.Client, route: str, body: dict[str, Any]) -> Any:
        r = client.post(f"/v1/{route}", json={"json": body})
        assert r.status_code == 200, r.text
        return r.json()["json"]

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = RECORDED.encode()
        info = tarfile.TarInfo("./.workflows/main.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with httpx.Client(base_url=server.url, timeout=15) as client:
        dep = v1(client, "deployments/create",
                 {"source": base64.b64encode(buf.getvalue()).decode()})
        deadline = time.monotonic() + 30
        while v1(client, "deployments/sync", {"id": dep["deployment_id"]})["status"] != "ready":
            assert time.monotonic() < deadline, "deployment not ready"
            time.sleep(0.1)
        job_id = v1(client, "jobs/create", {"workflow": "look", "params": {}})["job_id"]
        while (job := v1(client, "jobs/get", {"id": job_id}))["status"] not in (
                "completed", "failed", "cancelled"):
            assert time.monotonic() < deadline + 40, job
            time.sleep(0.1)
        assert job["status"] == "completed", job
        asked = time.time()
        rec = v1(client, "recordings/get", {"job_id": job_id})
    url, expires_at = rec["recording_url"], rec["recording_url_expires_at"]
    assert url.startswith(f"{server.url}/trace/index.html?trace=")
    left = datetime.fromisoformat(expires_at).timestamp() - asked
    assert 800 < left <= 901, left  # recordings.url_ttl: 15 minutes
    trace = parse_qs(urlsplit(url).query)["trace"][0]
    assert f"/recordings/{job_id}/page/trace.zip?" in trace
    answer = httpx.get(trace, timeout=10)
    assert answer.status_code == 200 and answer.content[:2] == b"PK"
