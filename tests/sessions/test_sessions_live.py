"""Browser sessions in a real Chromium, and their live view through a real server."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import websockets
from harness import free_port
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from engine.errors import NotFound, ValidationFailed
from engine.recordings import UrlSigner
from engine.sessions import CLOSED, SessionLimit, SessionManager, live_view_path
from server.live_view import live_view_routes

PAGE = """<!doctype html><html><head><title>form</title><style>
 body { margin: 0 } #name { position: absolute; left: 0; top: 0; width: 600px;
 height: 400px; font-size: 40px }</style></head>
<body><input id="name" onclick="window.clicks = (window.clicks || 0) + 1"></body></html>"""


@dataclass
class Site:
    url: str
    manager: SessionManager
    signer: UrlSigner


async def _page(request: Any) -> HTMLResponse:
    return HTMLResponse(PAGE)


@pytest.fixture
async def site(chromium_path: str) -> AsyncIterator[Site]:
    manager = SessionManager(chromium_path, max_per_tenant=1, idle_timeout=600)
    signer = UrlSigner(b"k" * 32)
    app = Starlette(routes=[Route("/page", _page), *live_view_routes()])
    app.state.sessions = manager
    app.state.recording_signer = signer
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.ensure_future(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield Site(f"http://127.0.0.1:{port}", manager, signer)
    finally:
        await manager.stop()
        server.should_exit = True
        await task


async def _evaluate(ws_url: str, expression: str) -> Any:
    async with websockets.connect(ws_url) as cdp:
        await cdp.send(orjson.dumps({"id": 1, "method": "Runtime.evaluate",
                                     "params": {"expression": expression,
                                                "returnByValue": True}}).decode())
        async for raw in cdp:
            message = orjson.loads(raw)
            if message.get("id") == 1:
                return message["result"]["result"].get("value")
    return None


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(ChildProcessError):
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    return False


async def test_session_live_view_shows_the_screen_and_takes_clicks_and_keys(site: Site) -> None:
    session = await site.manager.create("acme", start_url=f"{site.url}/page",
                                        viewport={"width": 800, "height": 600})
    assert session.status == "running"
    assert session.cdp_url.startswith("ws://127.0.0.1:")
    view = session.view("x")
    assert view["session_id"] == session.id and view["live_view_url"] == "x"
    # The tenant's limit is 1; another tenant is not affected by it.
    with pytest.raises(SessionLimit):
        await site.manager.create("acme")
    with pytest.raises(NotFound):
        site.manager.get("other", session.id)
    assert [s.id for s in site.manager.of_tenant("acme")] == [session.id]
    assert site.manager.of_tenant("other") == []
    assert site.manager.of_tenant("acme", "closed") == []

    # The live view page needs the signed link.
    signed = live_view_path(site.signer, session)
    async with httpx.AsyncClient(base_url=site.url) as client:
        assert (await client.get(f"/live/{session.id}")).status_code == 403
        page = await client.get(signed)
        assert page.status_code == 200 and session.id in page.text
        assert "startScreencast" not in page.text  # the page never talks CDP itself

    ws_url = site.url.replace("http", "ws") + signed.replace("?", "/ws?")
    async with websockets.connect(ws_url, max_size=None) as live:
        frame = orjson.loads(await asyncio.wait_for(live.recv(), 10))
        assert frame["type"] == "frame"
        assert base64.b64decode(frame["data"])[:2] == b"\xff\xd8"  # a JPEG
        assert frame["width"] == 800
        # Click into the field, then type "hi".
        for kind in ("mousePressed", "mouseReleased"):
            await live.send(orjson.dumps({"type": "mouse", "event": kind, "x": 0.2,
                                          "y": 0.2, "button": "left"}).decode())
        for key in "hi":
            await live.send(orjson.dumps({"type": "key", "event": "keyDown", "key": key,
                                          "text": key}).decode())
            await live.send(orjson.dumps({"type": "key", "event": "keyUp",
                                          "key": key}).decode())
        page_ws = await site.manager.page_ws_url(session)
        for _ in itertools.count():
            value = await _evaluate(page_ws, "document.querySelector('#name').value")
            if value == "hi":
                break
            assert _ < 50, f"typed text did not arrive: {value!r}"
            await asyncio.sleep(0.1)
        assert await _evaluate(page_ws, "window.clicks") == 1

    closed = await site.manager.close("acme", session.id)
    assert closed.status == CLOSED and closed.close_reason == "closed"
    assert [s.id for s in site.manager.of_tenant("acme", CLOSED)] == [session.id]
    assert _gone(session.pid)
    assert not session.profile_dir.exists()
    async with httpx.AsyncClient(base_url=site.url) as client:
        assert (await client.get(signed)).status_code == 403


async def test_idle_session_is_closed_and_its_browser_killed(chromium_path: str) -> None:
    manager = SessionManager(chromium_path, idle_timeout=0.3)
    try:
        session = await manager.create("acme", timeout_seconds=60)
        assert await manager.reap() == []
        # Nobody uses it: a reap after the idle timeout closes it (page loads at start
        # count as activity, so it may take a round more).
        deadline = time.monotonic() + 5
        while await manager.reap() != [session.id]:
            assert time.monotonic() < deadline, "the idle session was not closed"
            await asyncio.sleep(0.2)
        assert session.status == CLOSED and session.close_reason == "idle"
        deadline = time.monotonic() + 5
        while not _gone(session.pid):
            assert time.monotonic() < deadline, "the idle session's browser still runs"
            await asyncio.sleep(0.05)
        assert manager.get("acme", session.id).view(None)["cdp_url"] is None
    finally:
        await manager.stop()


async def test_timeout_bounds_are_checked_before_launching() -> None:
    manager = SessionManager("/nonexistent/chromium")
    for bad in (0, 7201, "60"):
        with pytest.raises(ValidationFailed):
            await manager.create("acme", timeout_seconds=bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed):
        await manager.create("acme", viewport={"width": "wide"})
