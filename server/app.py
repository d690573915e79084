"""The ASGI application: `create_app(settings)` (DESIGN §8).

The app owns the HTTP surface only: its lifespan builds and opens the engine `Runtime`
from the settings and closes it on shutdown (SIGTERM: running steps get
`shutdown.grace` seconds). Routes come from the `ENDPOINTS` tables of
`server.routes.*`, which also describe them in `/openapi.json`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import tracing
from engine.cloud import Cloud
from engine.runners import browser as browser_runner
from engine.runtime import Runtime, RuntimeOptions
from engine.sources.git import GitSpec
from server import browser_services, hooks
from server.auth import AuthMiddleware, document_auth, open_auth
from server.errors import (
    BodyTooLarge,
    InternalErrorMiddleware,
    error_response,
    exception_handlers,
)
from server.metrics import Metrics, MetricsMiddleware
from server.openapi import Endpoint, build_openapi
from server.routes import (
    artifacts,
    auth,
    control,
    debug,
    jobs,
    logs,
    ops,
    scopepause,
    tasks,
    users,
    workers,
    workspaces,
)
from server.traceviewer import trace_viewer_routes
from server.ui import ui_routes
from server.v1 import ENDPOINTS as V1_ENDPOINTS
from server.v1.envelope import V1ErrorMiddleware, cloud_options
from server.worker_api import worker_routes
from server.ws import DEFAULT_BUFFER, DEFAULT_SEND_TIMEOUT

log = logging.getLogger("partitur.server")

API_VERSION = "1"
WS_BUFFER_ENV = "PARTITUR_WS_BUFFER"
WS_SEND_TIMEOUT_ENV = "PARTITUR_WS_SEND_TIMEOUT"


def endpoints() -> tuple[Endpoint, ...]:
    """Every documented route, in the order they are matched."""
    return (*workspaces.ENDPOINTS, *tasks.ENDPOINTS, *jobs.ENDPOINTS, *artifacts.ENDPOINTS,
            *logs.ENDPOINTS, *workers.ENDPOINTS, *users.ENDPOINTS, *auth.ENDPOINTS,
            *ops.ENDPOINTS, *hooks.ENDPOINTS, *debug.ENDPOINTS, *control.ENDPOINTS,
            *scopepause.ENDPOINTS,
            *V1_ENDPOINTS)


def build_routes(table: Sequence[Endpoint]) -> list[BaseRoute]:
    """Starlette routes of the endpoint table (one `Route` per path, all its methods)."""
    routes: list[BaseRoute] = []
    by_path: dict[str, dict[str, Any]] = {}
    for ep in table:
        if ep.method == "WEBSOCKET":
            routes.append(WebSocketRoute(ep.path, ep.handler))
            continue
        by_path.setdefault(ep.path, {})[ep.method] = ep.handler
    for path, handlers in by_path.items():
        routes.append(Route(path, _dispatch(handlers), methods=list(handlers)))
    return routes


def _dispatch(handlers: dict[str, Any]) -> Any:
    if len(handlers) == 1:
        return next(iter(handlers.values()))

    async def endpoint(request: Any) -> Any:
        return await handlers[request.method](request)

    return endpoint


class BodyLimitMiddleware:
    """413 for a request body over `limit` bytes: by Content-Length, or while streaming."""

    def __init__(self, app: ASGIApp, limit: int, paths: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.paths = paths or {}  # larger limits for upload routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.paths:
            self = BodyLimitMiddleware(self.app, self.paths[scope["path"]])
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await self._reject(scope, receive, send)
                    return
        seen = 0
        limit = self.limit

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"the request body is larger than {limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"the request body is larger than {self.limit} bytes",
                                  headers={"Connection": "close"})
        await response(scope, receive, send)


def runtime_options(settings: Any) -> tuple[RuntimeOptions, list[str]]:
    """Engine options from the settings, and the names of git workspaces not served (none)."""
    folders: dict[str, Path] = {}
    git: dict[str, GitSpec] = {}
    for name, entry in settings.workspaces.items():
        if entry.path is not None:
            folders[name] = Path(entry.path)
        else:
            src = entry.git
            git[name] = GitSpec(url=src.url, ref=src.ref, poll_interval=float(src.poll_interval),
                                token=src.token, ssh_key=src.ssh_key)
    logs_dir = Path(settings.logs.dir)
    configured = getattr(getattr(settings, "artifacts", None), "dir", None)
    artifacts_dir = Path(configured) if configured else logs_dir.parent / "artifacts"
    options = RuntimeOptions(
        db_url=settings.db.url, logs_dir=logs_dir, artifacts_dir=artifacts_dir,
        workspaces=folders, concurrency=settings.workers.local.concurrency,
        base_dir=Path.cwd(), git_workspaces=git,
        worker_mode=settings.workers.mode,
        lease_timeout=float(settings.recovery.heartbeat_timeout),
        aging=getattr(getattr(settings, "scheduling", None), "aging", None),
        job_days=float(getattr(getattr(settings, "retention", None), "job_days", 0)),
        retention_interval=float(getattr(getattr(settings, "retention", None),
                                         "sweep_interval", 3600.0)),
    )
    return options, []


def create_app(settings: Any, *, runtime: Runtime | None = None) -> Starlette:
    """The app for `settings`; its lifespan opens (and closes) the engine runtime."""
    options, git_workspaces = runtime_options(settings)
    metrics = Metrics()
    tracing_settings = getattr(settings, "tracing", None)
    tracer = tracing.configure(getattr(tracing_settings, "otlp_endpoint", None),
                               service_name=getattr(tracing_settings, "service_name",
                                                    "partitur"))
    table = endpoints()
    routes = [*build_routes(table), *ui_routes(), *trace_viewer_routes(), *worker_routes(),
              *browser_services.routes()]
    browser_runner.configure(
        executable=getattr(getattr(settings, "browser", None), "executable", None),
        secrets_key=getattr(settings, "secrets_key", None))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt = runtime or Runtime(options)
        metrics.instrument_store(rt.store)
        rt.orchestrator.on_events(metrics.on_events)
        metrics.watch_stuck(rt.orchestrator, settings.stuck_after)
        if tracer is not None:
            rt.orchestrator.on_events(tracer.on_events)
        app.state.runtime = rt
        cloud = Cloud(rt, cloud_options(settings))
        cloud.attach()
        app.state.cloud = cloud
        services = browser_services.BrowserServices(settings, rt, cloud)
        services.attach(app.state)
        await rt.open()
        await open_auth(app.state, rt.store, settings)
        rt.start_triggers()
        await cloud.start()
        await services.start()
        try:
            yield
        finally:
            await services.close()
            await cloud.close()
            await rt.close(grace=float(settings.shutdown.grace))
            if tracer is not None:
                tracer.shutdown()

    app = Starlette(
        routes=routes,
        middleware=[
            *([Middleware(tracing.TracingMiddleware, tracer=tracer)] if tracer else []),
            Middleware(V1ErrorMiddleware),
            Middleware(MetricsMiddleware, metrics=metrics, routes=routes),
            Middleware(AuthMiddleware, settings=settings),
            Middleware(BodyLimitMiddleware, limit=int(settings.limits.body),
                       paths={"/v1/deployments/create": int(settings.limits.upload)}),
            Middleware(InternalErrorMiddleware),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.git_workspaces = git_workspaces
    app.state.started_at = time.time()
    # The document is built by the first GET /openapi.json (~0.3 MiB), not at start.
    app.state.openapi = functools.cache(lambda: document_auth(
        build_openapi(table, version=API_VERSION), table, settings,
        {**users.AUTH_STATUSES, **auth.AUTH_STATUSES}))
    app.state.ws_buffer = int(os.environ.get(WS_BUFFER_ENV, DEFAULT_BUFFER))
    app.state.ws_send_timeout = float(os.environ.get(WS_SEND_TIMEOUT_ENV, DEFAULT_SEND_TIMEOUT))
    return app
