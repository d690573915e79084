"""Authentication at the HTTP edge: credential extraction, route protection, ACL checks.

`AuthMiddleware` (pure ASGI, so it also guards WebSockets) decides per path:

- no `auth` section: everything is open, as in the reference (`/worker/*` still needs
  the worker token when `workers.token` is set);
- with one: every `/api`, `/v1`, `/openapi.json` route needs a user credential except
  `PUBLIC_ROUTES`; `/metrics` too unless `metrics.public`; `/worker/*` accepts only the
  worker token (a user token there is 401); the web UI shells and `/hooks` (HMAC) are
  not user routes.

A credential is `Authorization: Bearer <access token | API key>` or `x-api-key: <key>`;
a WebSocket may instead pass a single-use `?ticket=`. Long-lived credentials are never
read from the URL. The principal lands in `request.state.principal` for the routes,
which ask `require_task()` / `visible_rows()` what it may do (docs/auth.md).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.auth import passwords
from engine.auth.acl import Acl, Level
from engine.auth.model import Principal, User
from engine.auth.repo import auth_repository_for
from engine.auth.service import AuthService
from engine.auth.settings import AuthSettings
from engine.cloudtenancy import may_see_workspace
from engine.core.projections import JobRow
from engine.errors import Forbidden, NotFound, PartiturError, Unauthorized
from server.errors import error_response
from server.openapi import ERROR_SCHEMA, Endpoint, openapi_path

# Routes that never need credentials (method, path); everything else under the user
# prefixes does. Adding a route here is the only way to make one public.
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/healthz"), ("GET", "/readyz"),
    ("POST", "/api/auth/login"), ("POST", "/api/auth/refresh"),
})
USER_PREFIXES = ("/api/", "/v1/")
USER_PATHS = frozenset({"/api", "/v1", "/openapi.json", "/metrics"})
WORKER_PREFIX = "/worker"
NOT_ENABLED = "authentication is not enabled on this server"


def is_public(method: str, path: str, *, metrics_public: bool) -> bool:
    """Whether a request needs no user credential (worker routes excluded)."""
    if (method, path) in PUBLIC_ROUTES or (method == "HEAD" and ("GET", path) in PUBLIC_ROUTES):
        return True
    if path == "/metrics":
        return metrics_public
    return not (path in USER_PATHS or path.startswith(USER_PREFIXES))


def is_worker_path(path: str) -> bool:
    return path == WORKER_PREFIX or path.startswith(WORKER_PREFIX + "/")


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The credential of `Authorization: Bearer …` or `x-api-key: …`, if any."""
    found: str | None = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            found = value.decode("latin-1").strip()
    return found


def worker_token_ok(configured: str | None, presented: str | None) -> bool:
    """The worker token check (constant time); no configured token refuses everyone."""
    if not configured or not presented:
        return False
    return hmac.compare_digest(configured.encode(), presented.encode())


class AuthMiddleware:
    """Refuses unauthenticated requests with 401 and records the principal."""

    def __init__(self, app: ASGIApp, settings: Any) -> None:
        self.app = app
        self.settings = settings
        self.enabled = getattr(settings, "auth", None) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method = "GET" if scope["type"] == "websocket" else scope["method"]
        state = scope.setdefault("state", {})
        state["principal"] = None
        headers = scope.get("headers", ())
        if is_worker_path(path):
            token = self.settings.workers.token
            if (self.enabled or token) and not worker_token_ok(token, bearer(headers)):
                await self._refuse(scope, receive, send, "invalid or missing worker token")
                return
        elif self.enabled and not is_public(method, path,
                                            metrics_public=self.settings.metrics.public):
            service: AuthService = scope["app"].state.auth
            try:
                state["principal"] = await self._principal(scope, service)
            except Unauthorized as exc:
                await self._refuse(scope, receive, send, exc.message)
                return
        await self.app(scope, receive, send)

    async def _principal(self, scope: Scope, service: AuthService) -> Principal:
        credential = bearer(scope.get("headers", ()))
        if credential is not None:
            return await service.authenticate(credential)
        if scope["type"] == "websocket":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            tickets = query.get("ticket")
            if tickets:
                return await service.redeem_ticket(tickets[-1])
        raise Unauthorized("authentication required")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, message: str) -> None:
        response = error_response(401, message, headers={"WWW-Authenticate": "Bearer"})
        if scope["type"] == "http":
            await response(scope, receive, send)
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 401,
                        "headers": response.raw_headers})
            await send({"type": "websocket.http.response.body", "body": response.body})
        else:
            await send({"type": "websocket.close", "code": 4401, "reason": message[:120]})


async def open_auth(app_state: Any, store: Any, settings: Any) -> AuthService:
    """Build and open the auth service (signing secret, initial admin) on `app_state`."""
    service = AuthService(auth_repository_for(store), settings.auth or AuthSettings())
    await service.open()
    if getattr(settings, "auth", None) is not None:
        await asyncio.to_thread(passwords.prepare)
    app_state.auth = service
    app_state.acl = Acl(settings.acl.rules if getattr(settings, "acl", None) else None)
    return service


# --- what routes ask -------------------------------------------------------------------


def auth_enabled(conn: HTTPConnection) -> bool:
    return getattr(conn.app.state.settings, "auth", None) is not None


def principal_of(conn: HTTPConnection) -> Principal | None:
    """The caller (None when auth is off or the route is public)."""
    principal: Principal | None = getattr(conn.state, "principal", None)
    return principal


def user_of(conn: HTTPConnection) -> User | None:
    principal = principal_of(conn)
    return principal.user if principal is not None else None


def require_principal(conn: HTTPConnection) -> Principal:
    """The caller; 404 when auth is off (the auth routes do not exist then)."""
    principal = principal_of(conn)
    if principal is None:
        if not auth_enabled(conn):
            raise NotFound(NOT_ENABLED)
        raise Unauthorized("authentication required")
    return principal


def require_admin(conn: HTTPConnection) -> Principal:
    principal = require_principal(conn)
    if not principal.user.is_admin:
        raise Forbidden("only administrators may do this")
    return principal


def actor(conn: HTTPConnection) -> str | None:
    """Who to record in an event's `by` (None when auth is off)."""
    principal = principal_of(conn)
    return principal.name if principal is not None else None


def _folder(conn: HTTPConnection, workspace: str, task: str) -> str | None:
    try:
        ws = conn.app.state.runtime.workspaces.get(workspace)
        spec = ws.current.spec if ws.current is not None else None
    except PartiturError:
        return None
    found = spec.tasks.get(task) if spec is not None else None
    return found.folder if found is not None else None


def task_level(conn: HTTPConnection, workspace: str, task: str) -> Level:
    """What the caller may do with a task."""
    acl: Acl | None = getattr(conn.app.state, "acl", None)
    user = user_of(conn)
    if acl is None or user is None:
        return Level.RUN
    return acl.level(user, workspace, task, _folder(conn, workspace, task))


def require_task(conn: HTTPConnection, workspace: str, task: str, need: Level) -> None:
    """404 when the caller may not see the task; 403 when it may see but not run it."""
    level = task_level(conn, workspace, task)
    if level < Level.VIEW:
        raise NotFound(f"task {task!r} not found in workspace {workspace!r}")
    if level < need:
        raise Forbidden(f"you may view but not run task {task!r}")


def require_job(conn: HTTPConnection, row: JobRow, need: Level = Level.VIEW) -> None:
    """404 for a job of a task the caller may not see; 403 when it needs run and has view."""
    level = task_level(conn, row.workspace, row.task_name)
    if level < Level.VIEW:
        raise NotFound(f"job {row.job_id!r} not found")
    if level < need:
        raise Forbidden(f"you may view but not act on job {row.job_id}")


def restricted(conn: HTTPConnection) -> bool:
    """Whether lists must be filtered for the caller: an ACL applies to them, or some
    workspace belongs to another tenant (engine.cloudtenancy)."""
    user = user_of(conn)
    acl: Acl | None = getattr(conn.app.state, "acl", None)
    if user is None or user.is_admin or acl is None:
        return False
    if acl.rules is not None:
        return True
    return any(not may_see_workspace(user.groups, ws.name)
               for ws in conn.app.state.runtime.workspaces.all())


def workspace_visible(conn: HTTPConnection, workspace: str) -> bool:
    """Whether the caller may see a workspace at all (its tenant's, or an admin)."""
    user = user_of(conn)
    return user is None or user.is_admin or may_see_workspace(user.groups, workspace)


def visible_rows(conn: HTTPConnection, rows: Sequence[JobRow]) -> list[JobRow]:
    """The rows of jobs the caller may view."""
    if not restricted(conn):
        return list(rows)
    return [r for r in rows if task_level(conn, r.workspace, r.task_name) >= Level.VIEW]


# --- the OpenAPI document --------------------------------------------------------------

_AUTH_DESCRIPTIONS = {401: "Unauthorized (missing, invalid or expired credentials)",
                      403: "Forbidden", 429: "Too many attempts"}


def document_auth(doc: dict[str, Any], table: Sequence[Endpoint], settings: Any,
                  extra: dict[tuple[str, str], tuple[int, ...]]) -> dict[str, Any]:
    """Add 401 (and the `extra` statuses auth makes possible) when auth is enabled."""
    if getattr(settings, "auth", None) is None:
        return doc
    doc.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    }
    for ep in table:
        method = "get" if ep.method == "WEBSOCKET" else ep.method.lower()
        op = doc["paths"][openapi_path(ep.path)][method]
        statuses = set(extra.get((ep.method, ep.path), ()))
        if is_worker_path(ep.path) or not is_public(
                ep.method, ep.path, metrics_public=settings.metrics.public):
            statuses.add(401)
            op["security"] = [{"bearer": []}, {"apiKey": []}]
        for status in sorted(statuses):
            op["responses"].setdefault(str(status), {
                "description": _AUTH_DESCRIPTIONS.get(status, ""),
                "content": {"application/json": {"schema": ERROR_SCHEMA}}})
    return doc
