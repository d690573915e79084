"""`/trace/`: Playwright's trace viewer, served from the files in the Python package.

The viewer is a static single-page app with a service worker; it opens the `trace.zip`
named by its `?trace=` parameter (a browser step's artifact URL), so a recording opens
with no internet access. Service workers need a secure context: the viewer works over
HTTPS, or over plain HTTP on localhost/127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import playwright
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

PREFIX = "/trace"


def viewer_dir() -> Path:
    """Where the installed Playwright keeps its trace viewer build."""
    return Path(playwright.__file__).parent / "driver" / "package" / "lib" / "vite" / "traceViewer"


async def _to_index(request: Request) -> Response:
    query = request.url.query
    return RedirectResponse(f"{PREFIX}/index.html" + (f"?{query}" if query else ""),
                            status_code=307)


def trace_viewer_routes() -> list[BaseRoute]:
    """The routes of the viewer; none when this Playwright has no viewer build."""
    folder = viewer_dir()
    if not (folder / "index.html").is_file():
        return []
    return [
        Route(PREFIX, _to_index, methods=["GET"]),
        Route(PREFIX + "/", _to_index, methods=["GET"]),
        Mount(PREFIX, app=StaticFiles(directory=folder), name="trace-viewer"),
    ]
