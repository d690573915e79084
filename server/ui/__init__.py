"""The web UI served at `/`: HTML shells (Jinja2) and the static JS/CSS they load.

The server side is deliberately thin: each page is a template that names what it shows
(a job id, a task) and loads one ES module from `/ui/static/`, which fetches everything
else from `/api` and follows jobs live over the WebSocket events stream. There is no
build step; the files under `static/` are served as written.

`ui_routes()` returns the routes; `mount_ui(app)` appends them to an app. With an `auth`
section in the server config every page is marked `data-auth="on"`: its scripts then
send tokens (static/auth.js), and `/login` and the API-keys page exist; without one
those two redirect to the dashboard and nothing else changes.
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

NavEntry = tuple[str, str, str]

# Navigation entries: (path, label, page key).
NAV: tuple[NavEntry, ...] = (
    ("/", "Dashboard", "dashboard"),
    ("/workspaces", "Workspaces", "workspaces"),
    ("/jobs", "Jobs", "jobs"),
    ("/workers", "Workers", "workers"),
    ("/schedules", "Schedules", "schedules"),
    ("/deployments", "Deployments", "deployments"),
    ("/sessions", "Sessions", "sessions"),
)
# Shown only when the server has an `auth` section (the login page has no entry: the
# account slot in the header links to it, and every page sends you there when needed).
AUTH_NAV: tuple[NavEntry, ...] = (("/settings/keys", "API keys", "keys"),)


def auth_on(request: Request) -> bool:
    """Whether the server asks for credentials (an `auth` section in its config)."""
    settings = getattr(request.app.state, "settings", None)
    return getattr(settings, "auth", None) is not None


def nav_for(request: Request) -> tuple[NavEntry, ...]:
    return NAV + AUTH_NAV if auth_on(request) else NAV


def _page(request: Request, page: str, title: str, **context: Any) -> Response:
    return templates.TemplateResponse(
        request, f"{page}.html",
        {"page": page, "title": title, "nav": nav_for(request), "static": STATIC_PREFIX,
         "auth": auth_on(request), **context},
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


async def schedules(request: Request) -> Response:
    return _page(request, "schedules", "Schedules")


async def deployments(request: Request) -> Response:
    return _page(request, "deployments", "Deployments")


async def sessions(request: Request) -> Response:
    return _page(request, "sessions", "Browser sessions")


async def login(request: Request) -> Response:
    if not auth_on(request):
        return RedirectResponse("/", status_code=307)
    return _page(request, "login", "Log in")


async def keys(request: Request) -> Response:
    if not auth_on(request):
        return RedirectResponse("/", status_code=307)
    return _page(request, "keys", "API keys")


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
        Route("/schedules", schedules, methods=["GET"], name="ui-schedules"),
        Route("/deployments", deployments, methods=["GET"], name="ui-deployments"),
        Route("/sessions", sessions, methods=["GET"], name="ui-sessions"),
        Route("/login", login, methods=["GET"], name="ui-login"),
        Route("/settings/keys", keys, methods=["GET"], name="ui-keys"),
        Mount(STATIC_PREFIX, app=StaticFiles(directory=str(STATIC_DIR)), name="ui-static"),
    ]


def mount_ui(app: Starlette) -> None:
    """Add the UI routes to `app` (after its own, so `/api` always wins)."""
    app.router.routes.extend(ui_routes())
