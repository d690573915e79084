"""The live view of a browser session: `/live/{id}` (page) and `/live/{id}/ws` (proxy).

Both need the signed `expires`/`sig` query of the session's `live_view_url`
(engine.sessions.live_view_path); they need no other credential. The page opens the
websocket; the server connects to the session's page over CDP, starts a screencast
(`Page.startScreencast`) and forwards every frame to the page as
`{"type": "frame", "data": <base64 JPEG>, "width", "height"}`, acknowledging each to
Chromium. The page sends `{"type": "mouse", "event", "x", "y", "button", "clickCount"}`
(x and y as fractions of the picture) and `{"type": "key", "event", "key", "code",
"text"}`, which become `Input.dispatchMouseEvent` / `Input.dispatchKeyEvent`. The user's
browser never talks to Chromium itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import orjson
import websockets
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from engine.recordings import UrlSigner
from engine.sessions import LIVE_PREFIX, Session, SessionManager
from server.errors import error_response

_KEYS_WITHOUT_TEXT = {"Enter": "\r", "Tab": "", "Backspace": "", "Escape": ""}


def _manager(conn: Request | WebSocket) -> SessionManager:
    manager: SessionManager = conn.app.state.sessions
    return manager


def _authorized(conn: Request | WebSocket) -> Session | None:
    session_id = conn.path_params["session_id"]
    signer: UrlSigner = conn.app.state.recording_signer
    query = conn.query_params
    if not signer.verify(f"{LIVE_PREFIX}/{session_id}", query.get("expires"), query.get("sig"),
                         time.time()):
        return None
    return _manager(conn).running(session_id)


async def live_page(request: Request) -> Response:
    session = _authorized(request)
    if session is None:
        return error_response(403, "the live view link is invalid, expired or the session "
                                   "has ended")
    return HTMLResponse(PAGE.replace("__SESSION__", session.id),
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'self'; "
                                 "img-src 'self' data:; script-src 'unsafe-inline'; "
                                 "style-src 'unsafe-inline'; connect-src 'self'"})


async def live_socket(websocket: WebSocket) -> None:
    session = _authorized(websocket)
    if session is None:
        await websocket.close(code=1008)
        return
    manager = _manager(websocket)
    await websocket.accept()
    target = await manager.page_ws_url(session)
    ids = itertools.count(1)
    size = {"width": 1.0, "height": 1.0}
    async with websockets.connect(target, max_size=32 * 1024 * 1024) as cdp:

        async def call(method: str, params: dict[str, Any]) -> None:
            await cdp.send(orjson.dumps({"id": next(ids), "method": method,
                                         "params": params}).decode())

        async def from_chromium() -> None:
            async for raw in cdp:
                message = orjson.loads(raw)
                if message.get("method") != "Page.screencastFrame":
                    continue
                params = message["params"]
                meta = params.get("metadata", {})
                size.update(width=float(meta.get("deviceWidth") or size["width"]),
                            height=float(meta.get("deviceHeight") or size["height"]))
                await websocket.send_text(orjson.dumps({
                    "type": "frame", "data": params["data"], **size}).decode())
                await call("Page.screencastFrameAck", {"sessionId": params["sessionId"]})

        async def from_viewer() -> None:
            while True:
                event = orjson.loads(await websocket.receive_text())
                manager.touch(session.id)
                if event.get("type") == "mouse":
                    await call("Input.dispatchMouseEvent", {
                        "type": event.get("event", "mousePressed"),
                        "x": float(event.get("x", 0)) * size["width"],
                        "y": float(event.get("y", 0)) * size["height"],
                        "button": event.get("button", "left"),
                        "clickCount": int(event.get("clickCount", 1))})
                elif event.get("type") == "key":
                    key = str(event.get("key", ""))
                    text = event.get("text")
                    if text is None:
                        text = _KEYS_WITHOUT_TEXT.get(key, key if len(key) == 1 else "")
                    params: dict[str, Any] = {"type": event.get("event", "keyDown"),
                                              "key": key, "code": event.get("code", "")}
                    if text and params["type"] == "keyDown":
                        params["text"] = text
                    await call("Input.dispatchKeyEvent", params)

        await call("Page.enable", {})
        await call("Page.startScreencast", {"format": "jpeg", "quality": 70,
                                            "everyNthFrame": 1})
        tasks = [asyncio.ensure_future(from_chromium()), asyncio.ensure_future(from_viewer())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect,
                                         websockets.ConnectionClosed, Exception):
                    await task
    with contextlib.suppress(Exception):
        await websocket.close()


def live_view_routes() -> list[BaseRoute]:
    return [Route(LIVE_PREFIX + "/{session_id}", live_page, methods=["GET"]),
            WebSocketRoute(LIVE_PREFIX + "/{session_id}/ws", live_socket)]


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Partitur live view</title>
<style>
 body { margin: 0; background: #1e1e1e; color: #ddd; font: 14px sans-serif; }
 header { padding: 6px 10px; } #screen { display: block; max-width: 100vw; outline: none;
 cursor: default; } #state { opacity: .7; }
</style></head>
<body><header>Session <code>__SESSION__</code> <span id="state">connecting</span></header>
<img id="screen" tabindex="0" alt="live screen of the browser session">
<script>
const screen = document.getElementById("screen"), state = document.getElementById("state");
const proto = location.protocol === "https:" ? "wss:" : "ws:";
const ws = new WebSocket(proto + "//" + location.host + location.pathname + "/ws" +
                         location.search);
ws.onopen = () => { state.textContent = "live"; screen.focus(); };
ws.onclose = () => { state.textContent = "disconnected"; };
ws.onmessage = (msg) => {
  const frame = JSON.parse(msg.data);
  if (frame.type === "frame") screen.src = "data:image/jpeg;base64," + frame.data;
};
function send(obj) { if (ws.readyState === 1) ws.send(JSON.stringify(obj)); }
const buttons = ["left", "middle", "right"];
function mouse(kind) { return (e) => {
  const r = screen.getBoundingClientRect();
  send({type: "mouse", event: kind, x: (e.clientX - r.left) / r.width,
        y: (e.clientY - r.top) / r.height, button: buttons[e.button] || "left",
        clickCount: e.detail || 1});
  e.preventDefault(); screen.focus();
}; }
screen.addEventListener("mousedown", mouse("mousePressed"));
screen.addEventListener("mouseup", mouse("mouseReleased"));
screen.addEventListener("contextmenu", (e) => e.preventDefault());
screen.addEventListener("dragstart", (e) => e.preventDefault());
function key(kind) { return (e) => {
  send({type: "key", event: kind, key: e.key, code: e.code,
        text: kind === "keyDown" && e.key.length === 1 ? e.key : null});
  e.preventDefault();
}; }
screen.addEventListener("keydown", key("keyDown"));
screen.addEventListener("keyup", key("keyUp"));
</script></body></html>
"""
