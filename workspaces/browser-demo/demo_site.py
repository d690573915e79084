"""A tiny demo shop back office for the browser-demo workspace (and the browser tests).

Run it with `python workspaces/browser-demo/demo_site.py [--port 8765]`, then
`partitur run export-orders --workspace workspaces/browser-demo -i site_url=http://127.0.0.1:8765`.
User `alice`, password `wonderland`. Pages: `/` (sign-in form), `/orders` (a table of
orders, signed-in only), `/slow` (answers after a second), anything else 404.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import secrets
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

USER = "alice"
PASSWORD = "wonderland"
ORDERS = (
    ("A-1001", "Tea kettle", 3450),
    ("A-1002", "Teacups (set of 6)", 2200),
    ("A-1003", "Mad hatter's hat", 8999),
)
_sessions: set[str] = set()

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title></head>
<body>{body}</body></html>"""

_LOGIN = """<h1>Back office</h1>
{error}
<form id="login" method="post" action="/login">
  <label>User <input id="username" name="username" autocomplete="username"></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <select id="region" name="region"><option value="eu">Europe</option>
    <option value="us">Americas</option></select>
  <button id="sign-in" type="submit">Sign in</button>
</form>
<script>console.log("login page ready")</script>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=title, body=body), status_code=status)


async def login_form(request: Request) -> Response:
    return _page("Sign in", _LOGIN.format(error=""))


async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode())
    user = form.get("username", [""])[0]
    password = form.get("password", [""])[0]
    if user != USER or password != PASSWORD:
        error = '<p class="error" role="alert">Wrong user or password</p>'
        return _page("Sign in", _LOGIN.format(error=error), status=401)
    token = secrets.token_hex(16)
    _sessions.add(token)
    response = RedirectResponse("/orders", status_code=303)
    response.set_cookie("session", token, httponly=True, samesite="lax")
    return response


async def orders(request: Request) -> Response:
    if request.cookies.get("session") not in _sessions:
        return RedirectResponse("/", status_code=303)
    rows = "".join(
        f'<tr class="order"><td class="id">{html.escape(oid)}</td>'
        f'<td class="item">{html.escape(item)}</td>'
        f'<td class="total" data-cents="{cents}">{cents / 100:.2f} EUR</td></tr>'
        for oid, item, cents in ORDERS
    )
    body = (f'<h1 id="welcome">Welcome, {USER}</h1>'
            f'<table id="orders"><tbody>{rows}</tbody></table>'
            '<button id="export" class="btn btn-primary">Export CSV</button>'
            '<script>console.warn("orders loaded"); </script>')
    return _page("Orders", body)


async def slow(request: Request) -> Response:
    await asyncio.sleep(1.0)
    return _page("Slow", "<p id='slow'>finally</p>")


async def not_found(request: Request, exc: Exception) -> Response:
    return _page("Not found", "<h1>Not found</h1>", status=404)


async def favicon(request: Request) -> Response:
    return Response(status_code=204)


def create_app() -> Starlette:
    """The demo site's ASGI app."""
    return Starlette(
        routes=[Route("/", login_form), Route("/login", login, methods=["POST"]),
                Route("/orders", orders), Route("/slow", slow),
                Route("/favicon.ico", favicon)],
        exception_handlers={404: not_found},
    )


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")
