"""The web UI in Debian's Chromium against a real `partitur serve` process.

One server (fixture workspace tests/fixtures/ui_ws) and one browser serve the module;
every test gets a fresh page whose console errors and page errors fail the test.
Set PARTITUR_UI_SCREENSHOTS=1 to refresh the screenshots in docs/images/.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import REPO_ROOT, ServerProcess
from playwright.sync_api import Browser, Page, expect, sync_playwright
from uikit import CHROMIUM_ARGS, ConsoleGuard

pytestmark = pytest.mark.browser
expect.set_options(timeout=15_000)

FIXTURE_WS = REPO_ROOT / "tests" / "fixtures" / "ui_ws"
SCREENSHOTS_ENV = "PARTITUR_UI_SCREENSHOTS"


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("ui-server"), workspaces={"ui": FIXTURE_WS},
                         settings={"workers": {"local": {"concurrency": 4}}})
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def guard() -> ConsoleGuard:
    return ConsoleGuard()


@pytest.fixture
def page(browser: Browser, guard: ConsoleGuard) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    guard.attach(pg)
    try:
        yield pg
    finally:
        context.close()


def execute(server: ServerProcess, task: str, data: dict[str, Any] | None = None) -> str:
    response = httpx.post(f"{server.url}/api/workspaces/ui/tasks/{task}/execute",
                          json={"input": data or {}}, timeout=10)
    response.raise_for_status()
    job_id: str = response.json()["job_id"]
    return job_id


def job_json(server: ServerProcess, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=10)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def mark_document(page: Page) -> None:
    """Tag the loaded document: the tag survives anything but a reload or navigation."""
    page.evaluate("window.__partiturMark = 'same-document'")


def assert_same_document(page: Page) -> None:
    assert page.evaluate("window.__partiturMark") == "same-document"


def test_run_a_task_from_its_form_and_watch_it_complete_live(
        ui_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    # Find the task through the folder tree.
    page.goto(f"{ui_server.url}/workspaces")
    page.get_by_role("link", name="deploy", exact=True).click()
    expect(page.get_by_role("heading", name="deploy", exact=True)).to_be_visible()
    # The form follows the schema: types, options, multiple, defaults, secrets masked.
    form = page.get_by_role("form", name="Run deploy")
    expect(form.get_by_label("service")).to_have_value("api")
    expect(form.get_by_label("replicas")).to_have_attribute("type", "number")
    expect(form.get_by_label("token")).to_have_attribute("type", "password")
    expect(form.get_by_label("day")).to_have_attribute("type", "date")
    expect(form.get_by_label("dry_run")).to_be_checked()
    expect(form.get_by_label("notes")).to_have_js_property("tagName", "TEXTAREA")
    expect(form.get_by_label("env")).to_have_value("staging")
    # The flow graph and the trigger's next runs.
    expect(page.locator("#dag g.node")).to_have_count(4)
    expect(page.locator("#triggers")).to_contain_text("nightly-deploy")
    expect(page.locator("#triggers li")).to_have_count(5)

    form.get_by_label("service").fill("web")
    form.get_by_label("replicas").fill("3")
    form.get_by_label("env").select_option("production")
    form.get_by_label("regions").select_option(["eu", "ap"])
    form.get_by_label("dry_run").uncheck()
    form.get_by_label("token").fill("hunter2")
    form.get_by_role("button", name="Run deploy").click()

    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator('#dag g.node[data-status="completed"]')).to_have_count(4)
    expect(page.locator('#job-root[data-rendered="completed"]')).to_be_attached()
    expect(page.locator("#job-meta")).not_to_contain_text("Finished—")
    expect(page.locator("#logs")).to_contain_text("building web")
    expect(page.locator("#events")).to_contain_text("JobCompleted")
    # The screenshot artifact is shown inline and decodes.
    image = page.get_by_role("img", name="chart.png from package")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.complete && img.naturalWidth") == 24

    # What the form sent was typed by the schema.
    job = job_json(ui_server, job_id)
    assert job["input"]["service"] == "web"
    assert job["input"]["replicas"] == 3
    assert job["input"]["env"] == "production"
    assert job["input"]["regions"] == ["eu", "ap"]
    assert job["input"]["dry_run"] is False
    guard.check()


def test_job_page_follows_a_running_job_without_reloading(
        ui_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    job_id = execute(ui_server, "slow", {"seconds": 3})
    page.goto(f"{ui_server.url}/jobs/{job_id}")
    mark_document(page)
    expect(page.locator("#job-status")).to_have_text("running")
    expect(page.locator('#dag g.node[data-step="wait"]')).to_have_attribute(
        "data-status", "running")
    expect(page.locator("#logs")).to_contain_text("tick 1")
    expect(page.locator("#job-status")).to_have_text("completed", timeout=20_000)
    expect(page.locator('#dag g.node[data-step="wait"]')).to_have_attribute(
        "data-status", "completed")
    expect(page.locator("#logs")).to_contain_text("tick 2")
    expect(page.locator("#events")).to_contain_text("StepCompleted")
    expect(page.locator("#cancel")).to_be_hidden()
    assert_same_document(page)
    guard.check()


def test_open_a_failed_steps_logs(
        ui_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    job_id = execute(ui_server, "flaky")
    page.goto(f"{ui_server.url}/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("failed")
    node = page.locator('#dag g.node[data-step="explode"]')
    expect(node).to_have_attribute("data-status", "failed")
    node.click()
    detail = page.locator("#detail")
    expect(detail).to_contain_text("exit code 3")
    expect(detail).to_contain_text("kaboom: disk on fire")
    # Step detail: attempt, duration, input, output and the attempts' history.
    expect(detail.locator("dt", has_text="Attempt")).to_have_count(1)
    expect(detail.locator("dd").nth(2)).to_have_text("1")
    expect(detail.locator("dd").nth(5)).to_have_text(re.compile(r"^\d+(\.\d+)? (ms|s)$"))
    expect(detail.get_by_role("heading", name="Input")).to_be_visible()
    expect(detail.get_by_role("heading", name="Output")).to_be_visible()
    expect(detail.locator("ol.attempts li")).to_have_count(2)  # started, failed
    expect(detail.locator("ol.attempts li").last).to_contain_text("Failed")
    detail.get_by_role("button", name="Show logs").click()
    logs = page.locator("#logs")
    expect(page.locator("#log-step")).to_have_value("explode")
    expect(logs.locator(".line.stderr")).to_contain_text("kaboom: disk on fire")
    expect(logs).to_contain_text("about to explode")
    expect(logs).not_to_contain_text("setting up")
    # Filter by stream, then search.
    page.get_by_label("Log stream").select_option("stderr")
    expect(logs.locator(".line")).to_have_count(1)
    page.get_by_label("Log step").select_option("")
    page.get_by_label("Log stream").select_option("")
    page.get_by_label("Search logs").fill("setting")
    expect(logs.locator(".line")).to_have_count(1)
    expect(logs.locator("mark")).to_have_text("setting")
    # The engine's own notes are shown, and can be hidden.
    page.get_by_label("Search logs").fill("")
    expect(logs.locator(".line.server").first).to_contain_text("job created")
    page.get_by_label("engine notes").uncheck()
    expect(logs.locator(".line.server")).to_have_count(0)
    expect(page.locator("#events")).to_contain_text("StepFailed")
    guard.check()


def test_approve_an_approval(ui_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    job_id = execute(ui_server, "release", {"version": "3.1"})
    page.goto(f"{ui_server.url}/jobs/{job_id}")
    mark_document(page)
    card = page.get_by_role("region", name="Approval: gate")
    expect(card).to_contain_text("Release 3.1?")
    expect(page.locator('#dag g.node[data-step="gate"]')).to_have_attribute(
        "data-status", "suspended")
    card.get_by_label("ticket").fill("42")
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(card).to_be_hidden()
    expect(page.locator("#logs")).to_contain_text("shipped with ticket 42")
    assert_same_document(page)
    steps = {s["step_name"]: s for s in job_json(ui_server, job_id)["steps"]}
    assert steps["gate"]["status"] == "completed"
    assert steps["gate"]["output"]["input"]["ticket"] == 42
    guard.check()


def test_reject_an_approval(ui_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    job_id = execute(ui_server, "release")
    page.goto(f"{ui_server.url}/jobs/{job_id}")
    card = page.get_by_role("region", name="Approval: gate")
    card.get_by_label("Reason").fill("not today")
    card.get_by_role("button", name="Reject").click()
    expect(page.locator("#job-status")).to_have_text("failed")
    assert job_json(ui_server, job_id)["status"] == "failed"
    guard.check()


def test_cancel_a_job(ui_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    job_id = execute(ui_server, "slow", {"seconds": 30})
    page.goto(f"{ui_server.url}/jobs/{job_id}")
    mark_document(page)
    expect(page.locator("#job-status")).to_have_text("running")
    expect(page.locator("#logs")).to_contain_text("tick 0")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#cancel")).to_be_hidden()
    assert job_json(ui_server, job_id)["status"] == "cancelled"
    assert_same_document(page)
    guard.check()


def test_rerun_from_a_step_opens_the_new_job(
        ui_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    job_id = execute(ui_server, "flaky")
    page.goto(f"{ui_server.url}/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("failed")
    page.get_by_label("Re-run from step").select_option("explode")
    page.get_by_role("button", name="Re-run", exact=True).click()
    page.wait_for_url(re.compile(r"/jobs/(?!" + job_id + r")[0-9a-f-]{36}$"))
    expect(page.locator("#job-status")).to_have_text("failed")
    expect(page.locator("#job-meta")).to_contain_text(job_id.replace("-", "")[-8:])
    guard.check()


def test_lists_dashboard_and_workers(
        ui_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    execute(ui_server, "hello")
    failed = execute(ui_server, "flaky")
    deadline = time.monotonic() + 10
    while job_json(ui_server, failed)["status"] != "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    page.goto(f"{ui_server.url}/")
    expect(page.locator('#counts a[data-status="failed"] .n')).not_to_have_text("0")
    expect(page.locator("#failing")).to_contain_text("flaky")
    expect(page.locator("#workers")).to_contain_text("active")
    expect(page.locator("#recent tbody tr").first).to_be_visible()

    page.goto(f"{ui_server.url}/jobs?workspace=ui&status=failed")
    expect(page.locator("#jobs tbody tr").first).to_be_visible()
    statuses = page.locator("#jobs tbody .badge").all_inner_texts()
    assert statuses and set(statuses) == {"failed"}
    page.get_by_label("Status", exact=True).select_option("")
    page.get_by_label("Task", exact=True).fill("hello")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"task_name=hello"))
    expect(page.locator("#jobs tbody tr").first).to_contain_text("hello")
    total = int(httpx.get(f"{ui_server.url}/api/jobs?workspace=ui&task_name=hello&limit=0")
                .headers["X-Total-Count"])
    expect(page.locator("#page-info")).to_contain_text(f"of {total}")
    # Filter by source: the jobs' own source keeps them, another shows none.
    source = job_json(ui_server, failed)["source_type"]
    page.get_by_label("Source", exact=True).select_option(source)
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(rf"source_type={source}"))
    expect(page.locator("#jobs tbody tr").first).to_contain_text(source)
    page.get_by_label("Source", exact=True).select_option("webhook")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#jobs")).to_contain_text("No jobs.")

    page.goto(f"{ui_server.url}/workers")
    expect(page.locator("#workers")).to_contain_text("embedded")
    page.goto(f"{ui_server.url}/workspaces")
    page.get_by_label("Filter tasks").fill("flak")
    expect(page.locator("li.task:visible")).to_have_count(1)
    guard.check()


def v1_call(server: ServerProcess, route: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{server.url}/v1/{route}", json={"json": body}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["json"]


def workspace_tarball() -> str:
    """The fixture workspace as the base64 gzip tarball `/v1/deployments/create` takes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(FIXTURE_WS / ".workflows", arcname="./.workflows")
    return base64.b64encode(buf.getvalue()).decode()


def test_no_login_or_keys_pages_without_auth(
        ui_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    for path in ("/login", "/settings/keys"):
        page.goto(f"{ui_server.url}{path}")
        expect(page).to_have_url(f"{ui_server.url}/")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Schedules")).to_be_visible()
    expect(nav.get_by_role("link", name="API keys")).to_have_count(0)
    expect(page.locator("#account")).to_be_empty()
    expect(page.locator("#recent")).not_to_be_empty()
    guard.check()


def test_deployments_and_schedules_of_the_cloud_api(
        ui_server: ServerProcess, page: Page, guard: ConsoleGuard, tmp_path: Path) -> None:
    created = v1_call(ui_server, "deployments/create",
                      {"source": workspace_tarball(), "description": "ui fixture"})
    dep_id = created["deployment_id"]
    deadline = time.monotonic() + 20
    while (dep := v1_call(ui_server, "deployments/sync", {"id": dep_id}))["status"] == "building":
        assert time.monotonic() < deadline, dep
        time.sleep(0.1)
    assert dep["status"] == "ready", dep
    page.goto(f"{ui_server.url}/deployments")
    row = page.locator(f'#deployments tr[data-id="{dep_id}"]')
    expect(row).to_contain_text("ui fixture")
    expect(row.locator(".badge")).to_have_text("ready")
    expect(row).to_contain_text("deploy")
    _save(page, "deployments.png", tmp_path)

    workflow = dep["workflows"][0]
    v1_call(ui_server, "schedules/create", {"workflow": workflow, "cron_expr": "0 3 * * *"})
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Schedules").click()
    expect(page.locator("#triggers")).to_contain_text("nightly-deploy")
    cloud = page.locator("#cloud-schedules")
    expect(cloud).to_contain_text(workflow)
    expect(cloud).to_contain_text("0 3 * * *")
    expect(cloud.locator("tbody time").first).to_have_attribute("datetime", re.compile(r"T03:00"))
    _save(page, "schedules.png", tmp_path)
    guard.check()


def test_browser_sessions_listed_with_a_live_view(
        ui_server: ServerProcess, page: Page, guard: ConsoleGuard, tmp_path: Path) -> None:
    made = v1_call(ui_server, "sessions/create",
                   {"timeout_seconds": 600, "start_url": f"{ui_server.url}/workers"})
    sid = made["session_id"]
    try:
        page.goto(f"{ui_server.url}/sessions")
        mark_document(page)
        row = page.locator(f'#sessions tr[data-id="{sid}"]')
        expect(row.locator(".badge")).to_have_text("running")
        expect(row.locator("time").first).to_have_attribute("datetime", made["created_at"])
        expect(row.locator("time").nth(1)).to_have_attribute("datetime", made["expires_at"])
        link = row.get_by_role("link", name=f"Live view of session {sid} in a new tab")
        expect(link).to_have_attribute("href", made["live_view_url"])
        # Watching it shows the live screen in a frame.
        row.get_by_role("button", name=f"Watch session {sid}").click()
        expect(row).to_have_class(re.compile(r"\bselected\b"))
        expect(page.locator("#live-status .badge")).to_have_text("running")
        live = page.frame_locator("#live-view iframe")
        expect(live.locator("#state")).to_have_text("live")
        expect(live.get_by_role("img", name="live screen of the browser session")) \
            .to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
        _save(page, "sessions.png", tmp_path)
    finally:
        closed = v1_call(ui_server, "sessions/close", {"session_id": sid})
    assert closed["status"] == "closed"
    # The list and the live view follow the close without a reload.
    expect(row.locator(".badge")).to_have_text("closed")
    expect(row).to_contain_text("(closed)")
    expect(row.get_by_role("link")).to_have_count(0)
    expect(page.locator("#live-view")).to_contain_text(f"Session {sid} closed")
    expect(page.locator("#live-view iframe")).to_have_count(0)
    assert_same_document(page)
    # An unknown id opened by hand says so.
    guard.expect_failed_request("/v1/sessions/get", 404)
    page.get_by_label("Session id").fill("no-such-session")
    page.get_by_role("button", name="Watch", exact=True).click()
    expect(page.locator("#live-view .error-box")).to_contain_text("not found")
    guard.check()


CONTROL_ROLES = ("button", "link", "textbox", "combobox", "checkbox", "listbox", "spinbutton",
                 "radio", "searchbox", "slider", "switch", "menuitem", "tab", "option")
UNNAMED = re.compile(r"^\s*- (" + "|".join(CONTROL_ROLES) + r")(\s*$|\s*\[|:)", re.MULTILINE)


def test_every_control_has_an_accessible_name(
        ui_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    failed = execute(ui_server, "flaky")
    approval = execute(ui_server, "release", {"version": "1.0"})
    deadline = time.monotonic() + 20
    while job_json(ui_server, failed)["status"] != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pages = {"/": "#recent tbody tr", "/workspaces": "li.task",
             "/workspaces/ui/tasks/deploy": "#dag g.node", f"/jobs/{failed}": "#dag g.node",
             f"/jobs/{approval}": "#approvals form", "/jobs": "#jobs tbody tr",
             "/workers": "#workers tbody tr", "/schedules": "#triggers tbody tr",
             "/deployments": "#deployments", "/sessions": "#sessions"}
    for path, ready in pages.items():
        page.goto(f"{ui_server.url}{path}")
        expect(page.locator(ready).first).to_be_attached()
        page.wait_for_load_state("networkidle")
        tree = page.locator("body").aria_snapshot()
        unnamed = [m.group(0).strip() for m in UNNAMED.finditer(tree)]
        assert unnamed == [], f"{path}: controls without a name: {unnamed}\n{tree}"
    # The task page shows duration statistics of its recent jobs.
    execute(ui_server, "deploy")
    page.goto(f"{ui_server.url}/workspaces/ui/tasks/deploy")
    expect(page.locator("#stats")).to_contain_text(
        re.compile(r"p50 .+ · p95 .+ over \d+ completed"))
    guard.check()


def test_phone_width_and_dark_mode(
        ui_server: ServerProcess, browser: Browser, tmp_path: Path) -> None:
    job_id = execute(ui_server, "deploy")
    session = v1_call(ui_server, "sessions/create", {"timeout_seconds": 300})["session_id"]
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    guard = ConsoleGuard()
    try:
        pg = context.new_page()
        guard.attach(pg)
        for path in ("/", "/workspaces/ui/tasks/deploy", f"/jobs/{job_id}", "/jobs",
                     "/schedules", "/deployments", "/sessions"):
            pg.goto(f"{ui_server.url}{path}")
            pg.wait_for_load_state("networkidle")
            if path == "/sessions":  # a listed session, watched live
                pg.get_by_role("button", name=f"Watch session {session}").click()
                expect(pg.frame_locator("#live-view iframe").locator("#state")).to_have_text(
                    "live")
            # Nothing wider than the screen: content wraps or scrolls inside its box.
            overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} overflows by {overflow}px"
        bg = pg.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(18, 21, 28)"
        pg.screenshot(path=str(tmp_path / "phone.png"))
    finally:
        context.close()
        v1_call(ui_server, "sessions/close", {"session_id": session})
    guard.check()


def _save(page: Page, name: str, tmp_path: Path) -> None:
    target = tmp_path / name
    page.screenshot(path=str(target), full_page=False)
    assert target.stat().st_size > 10_000
    if os.environ.get(SCREENSHOTS_ENV) == "1":
        shutil.copyfile(target, REPO_ROOT / "docs" / "images" / name)


def test_screenshots_of_the_main_pages(
        ui_server: ServerProcess, page: Page, guard: ConsoleGuard, tmp_path: Path) -> None:
    for _ in range(2):
        execute(ui_server, "deploy")
    job_id = execute(ui_server, "release", {"version": "4.2"})
    page.goto(f"{ui_server.url}/jobs/{job_id}")
    expect(page.get_by_role("region", name="Approval: gate")).to_be_visible()
    page.goto(f"{ui_server.url}/")
    expect(page.locator("#recent tbody tr").first).to_be_visible()
    page.wait_for_load_state("networkidle")
    _save(page, "dashboard.png", tmp_path)
    page.goto(f"{ui_server.url}/workspaces/ui/tasks/deploy")
    expect(page.locator("#recent tbody tr").first).to_be_visible()
    _save(page, "task.png", tmp_path)
    deploy_job = execute(ui_server, "deploy")
    page.goto(f"{ui_server.url}/jobs/{deploy_job}")
    expect(page.locator('#job-root[data-rendered="completed"]')).to_be_attached()
    page.locator('#dag g.node[data-step="build"]').click()
    expect(page.locator("#detail")).to_contain_text("img:1")
    _save(page, "job.png", tmp_path)
    page.goto(f"{ui_server.url}/jobs/{job_id}")
    expect(page.get_by_role("region", name="Approval: gate")).to_be_visible()
    _save(page, "approval.png", tmp_path)
    guard.check()
