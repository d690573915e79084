"""The web UI served at `/`: HTML shells (Jinja2) and the static JS/CSS they load.

The server side is deliberately thin: each page is a template that names what it shows
(a job id, a task) and loads one ES module from `/ui/static/`, which fetches everything
else from `/api` and follows jobs live over the WebSocket events stream. There is no
build step; the files under `static/` are served as written.

`ui_routes()` returns the routes; `mount_ui(app)` appends them to an app. Login and API
key pages (issue: auth) belong in `PAGES` here, with their templates next to the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATES_DIR = HERE / "templates"
STATIC_PREFIX = "/ui/static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))

# Navigation entries: (path, label, page key). Auth pages (login, keys) go here too.
NAV: tuple[tuple[str, str, str], ...] = (
    ("/", "Dashboard", "dashboard"),
    ("/workspaces", "Workspaces", "workspaces"),
    ("/jobs", "Jobs", "jobs"),
    ("/workers", "Workers", "workers"),
)


def _page(request: Request, page: str, title: str, **context: Any) -> Response:
    return templates.TemplateResponse(
        request, f"{page}.html",
        {"page": page, "title": title, "nav": NAV, "static": STATIC_PREFIX, **context},
        headers={"Cache-Control": "no-store"},
    )


async def dashboard(request: Request) -> Response:
    return _page(request, "dashboard", "Dashboard")


async def workspaces(request: Request) -> Response:
    return _page(request, "workspaces", "Workspaces")


async def task(request: Request) -> Response:
    ws = str(request.path_params["ws"])
    name = str(request.path_params["name"])
    return _page(request, "task", f"{name} · {ws}", workspace=ws, task=name)


async def jobs(request: Request) -> Response:
    return _page(request, "jobs", "Jobs")


async def job(request: Request) -> Response:
    job_id = str(request.path_params["id"])
    return _page(request, "job", f"Job {job_id[:8]}", job_id=job_id)


async def workers(request: Request) -> Response:
    return _page(request, "workers", "Workers")


async def ui_root(request: Request) -> Response:
    return RedirectResponse("/", status_code=307)


def ui_routes() -> list[BaseRoute]:
    """The UI's page routes and its static files (no route under `/api`)."""
    return [
        Route("/", dashboard, methods=["GET"], name="ui-dashboard"),
        Route("/ui", ui_root, methods=["GET"]),
        Route("/workspaces", workspaces, methods=["GET"], name="ui-workspaces"),
        Route("/workspaces/{ws}/tasks/{name}", task, methods=["GET"], name="ui-task"),
        Route("/jobs", jobs, methods=["GET"], name="ui-jobs"),
        Route("/jobs/{id}", job, methods=["GET"], name="ui-job"),
        Route("/workers", workers, methods=["GET"], name="ui-workers"),
        Mount(STATIC_PREFIX, app=StaticFiles(directory=str(STATIC_DIR)), name="ui-static"),
    ]


def mount_ui(app: Starlette) -> None:
    """Add the UI routes to `app` (after its own, so `/api` always wins)."""
    app.router.routes.extend(ui_routes())
