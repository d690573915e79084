"""The web UI of a server with an `auth` section, in Debian's Chromium.

Log in, run a task and follow its job live (the WebSocket with a ticket), renew an
expired or refused access token, land on the login page when renewing fails, log out;
create, copy and revoke an API key; the cloud-API pages with a token. One server (the
fixture workspace tests/fixtures/ui_ws) and one browser serve the module; every test
gets a fresh context, and any console error it did not ask for fails it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import REPO_ROOT, ServerProcess
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from uikit import CHROMIUM_ARGS, ConsoleGuard

pytestmark = pytest.mark.browser
expect.set_options(timeout=15_000)

FIXTURE_WS = REPO_ROOT / "tests" / "fixtures" / "ui_ws"
EMAIL, PASSWORD = "admin@example.com", "change-me-please"
STORE_KEY = "partitur.session"
SCREENSHOTS_ENV = "PARTITUR_UI_SCREENSHOTS"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("ui-auth-server"), workspaces={"ui": FIXTURE_WS},
                         settings={"workers": {"local": {"concurrency": 4}},
                                   "auth": {"initial_user": {"email": EMAIL,
                                                             "password": PASSWORD,
                                                             "name": "Admin"},
                                            "rate_limit": {"per_ip": 500, "per_user": 50,
                                                           "window": "1m"}}})
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
def context(browser: Browser, auth_server: ServerProcess) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=auth_server.url)
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def guard() -> ConsoleGuard:
    return ConsoleGuard()


@pytest.fixture
def page(context: BrowserContext, guard: ConsoleGuard) -> Page:
    pg = context.new_page()
    guard.attach(pg)
    return pg


def log_in(page: Page, server: ServerProcess, path: str = "/") -> None:
    """Open `path`, get sent to the login page, log in, come back to `path`."""
    page.goto(f"{server.url}{path}")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}{path}")
    expect(page.locator("#account")).to_contain_text(EMAIL)


def save_screenshot(page: Page, name: str, tmp_path: Path) -> None:
    """Screenshot the page; with PARTITUR_UI_SCREENSHOTS=1 also into docs/images/."""
    target = tmp_path / name
    page.screenshot(path=str(target), full_page=False)
    assert target.stat().st_size > 10_000
    if os.environ.get(SCREENSHOTS_ENV) == "1":
        shutil.copyfile(target, REPO_ROOT / "docs" / "images" / name)


def stored(page: Page) -> dict[str, Any]:
    raw = page.evaluate(f"sessionStorage.getItem('{STORE_KEY}')")
    assert raw, "no session in sessionStorage"
    data: dict[str, Any] = json.loads(raw)
    return data


def patch_stored(page: Page, **fields: Any) -> None:
    page.evaluate("([key, fields]) => sessionStorage.setItem(key, JSON.stringify("
                  "{...JSON.parse(sessionStorage.getItem(key)), ...fields}))",
                  [STORE_KEY, fields])


def test_login_run_a_task_live_and_log_out(
        auth_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    # Every page needs a login first: straight to the login page, no failed request.
    page.goto(f"{auth_server.url}/jobs")
    page.wait_for_url(f"{auth_server.url}/login?next=%2Fjobs")
    expect(page.get_by_role("heading", name="Log in to Partitur")).to_be_visible()
    # A wrong password is refused on the page.
    guard.expect_failed_request("/api/auth/login", 401)
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{auth_server.url}/jobs")
    expect(page.locator("#account")).to_contain_text(EMAIL)
    expect(page.get_by_role("navigation", name="Main").get_by_role(
        "link", name="API keys")).to_be_visible()

    # Run a task from its form; its job page follows it live over a ticketed WebSocket.
    page.goto(f"{auth_server.url}/workspaces")
    page.get_by_role("link", name="deploy", exact=True).click()
    form = page.get_by_role("form", name="Run deploy")
    form.get_by_label("service").fill("web")
    form.get_by_role("button", name="Run deploy").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#logs")).to_contain_text("building web")
    # The screenshot artifact is fetched with the token and shown inline.
    image = page.get_by_role("img", name="chart.png from package")
    expect(image).to_have_js_property("naturalWidth", 24)
    job_id = page.url.rsplit("/", 1)[1]
    session = stored(page)
    job = httpx.get(f"{auth_server.url}/api/jobs/{job_id}", timeout=10,
                    headers={"Authorization": f"Bearer {session['access']}"}).json()
    assert job["created_by"] == EMAIL
    # A running job is followed live: the stream's WebSocket opened with a ticket.
    slow = httpx.post(f"{auth_server.url}/api/workspaces/ui/tasks/slow/execute",
                      json={"input": {"seconds": 2}}, timeout=10,
                      headers={"Authorization": f"Bearer {session['access']}"}).json()["job_id"]
    page.goto(f"{auth_server.url}/jobs/{slow}")
    expect(page.locator("#live")).to_have_text("● live")
    expect(page.locator("#logs")).to_contain_text("tick 1")
    expect(page.locator("#job-status")).to_have_text("completed")

    # Log out: the login page, a page needs a login again, the refresh token is dead.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{auth_server.url}/login")
    assert page.evaluate(f"sessionStorage.getItem('{STORE_KEY}')") is None
    page.goto(f"{auth_server.url}/workers")
    page.wait_for_url(re.compile(r"/login\?next=%2Fworkers$"))
    refused = httpx.post(f"{auth_server.url}/api/auth/refresh",
                         json={"refresh_token": session["refresh"]}, timeout=10)
    assert refused.status_code == 401
    guard.check()


def test_tokens_are_renewed_and_a_dead_session_goes_to_login(
        auth_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    log_in(page, auth_server, "/workers")
    expect(page.locator("#workers")).to_contain_text("embedded")
    first = stored(page)
    # An access token about to expire is renewed before it is used: no failed request.
    patch_stored(page, expires=0)
    page.reload()
    expect(page.locator("#workers")).to_contain_text("embedded")
    renewed = stored(page)
    assert renewed["access"] != first["access"]
    assert renewed["refresh"] != first["refresh"]
    # An access token the server refuses: one 401, renewed, the page still works.
    guard.expect_failed_request("/api/workers", 401)
    patch_stored(page, access="pat.forged.token")
    page.reload()
    expect(page.locator("#workers")).to_contain_text("embedded")
    assert stored(page)["access"] not in ("pat.forged.token", renewed["access"])
    # Renewal refused too: the login page, which brings you back after logging in.
    guard.expect_failed_request("/api/auth/refresh", 401)
    patch_stored(page, access="pat.forged.token", refresh="forged-refresh")
    page.reload()
    page.wait_for_url(f"{auth_server.url}/login?next=%2Fworkers")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{auth_server.url}/workers")
    expect(page.locator("#workers")).to_contain_text("embedded")
    guard.check()


def test_api_keys_create_copy_and_revoke(
        auth_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    log_in(page, auth_server)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    # Create a key that expires in ten days; it is shown once, with a copy button.
    day = (dt.date.today() + dt.timedelta(days=10)).isoformat()
    form = page.get_by_role("form", name="New key")
    form.get_by_label("Name").fill("ci-runner")
    form.get_by_label("Expires").fill(day)
    form.get_by_role("button", name="Create key").click()
    shown = page.get_by_role("region", name="New API key")
    expect(shown).to_be_visible()
    key = page.locator("#new-key-value").inner_text()
    assert re.fullmatch(r"pk_[A-Za-z0-9]+_\S+", key), key
    shown.get_by_role("button", name="Copy").click()
    expect(page.locator("#toast")).to_have_text("Key copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    # Listed by its prefix (never the key), with its expiry; the key works.
    prefix = key.split("_")[1]
    row = page.locator(f'#keys tr[data-prefix="{prefix}"]')
    expect(row).to_contain_text("ci-runner")
    expect(row.locator(".badge")).to_have_text("active")
    assert key not in page.locator("#keys").inner_text()
    ok = httpx.get(f"{auth_server.url}/api/jobs?limit=1", headers={"x-api-key": key}, timeout=10)
    assert ok.status_code == 200
    listed = httpx.get(f"{auth_server.url}/api/auth/keys", headers={"x-api-key": key},
                       timeout=10).json()
    expires = next(k["expires_at"] for k in listed if k["prefix"] == prefix)
    assert dt.datetime.fromisoformat(expires).astimezone().date().isoformat() == day
    # Revoke it (after confirming): the list says so and the key stops working.
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Revoke key {prefix}").click()
    expect(row.locator(".badge")).to_have_text("revoked")
    expect(row.get_by_role("button")).to_have_count(0)
    refused = httpx.get(f"{auth_server.url}/api/jobs?limit=1", headers={"x-api-key": key},
                        timeout=10)
    assert refused.status_code == 401
    # Reloading shows the key no more: it was shown once.
    page.reload()
    expect(page.locator(f'#keys tr[data-prefix="{prefix}"]')).to_be_visible()
    expect(page.get_by_role("region", name="New API key")).to_be_hidden()
    guard.check()


def test_cloud_api_pages_send_the_token(
        auth_server: ServerProcess, page: Page, guard: ConsoleGuard) -> None:
    log_in(page, auth_server, "/deployments")
    expect(page.locator("#deployments")).to_contain_text("No deployments yet.")
    page.goto(f"{auth_server.url}/schedules")
    expect(page.locator("#triggers")).to_contain_text("nightly-deploy")
    expect(page.locator("#cloud-schedules")).to_contain_text("No cloud schedules.")
    guard.check()


def test_login_and_keys_pages_at_phone_width_in_dark_mode(
        auth_server: ServerProcess, browser: Browser, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    guard = ConsoleGuard()
    try:
        pg = context.new_page()
        guard.attach(pg)
        log_in(pg, auth_server, "/settings/keys")
        pg.get_by_label("Name").fill("phone")
        pg.get_by_role("button", name="Create key").click()
        expect(pg.get_by_role("region", name="New API key")).to_be_visible()
        for path in ("/settings/keys", "/login"):
            if path != "/settings/keys":
                pg.goto(f"{auth_server.url}{path}")
            pg.wait_for_load_state("networkidle")
            overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} overflows by {overflow}px"
        assert pg.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(18, 21, 28)"
    finally:
        context.close()
    guard.check()


def test_screenshots_of_login_and_keys(
        auth_server: ServerProcess, page: Page, guard: ConsoleGuard, tmp_path: Path) -> None:
    page.goto(f"{auth_server.url}/login")
    page.get_by_label("Email").fill(EMAIL)
    save_screenshot(page, "login.png", tmp_path)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{auth_server.url}/")
    page.goto(f"{auth_server.url}/settings/keys")
    for name in ("deploy-bot", "nightly-report"):
        page.get_by_label("Name").fill(name)
        page.get_by_role("button", name="Create key").click()
        expect(page.locator("#keys")).to_contain_text(name)
    expect(page.get_by_role("region", name="New API key")).to_be_visible()
    save_screenshot(page, "keys.png", tmp_path)
    guard.check()
