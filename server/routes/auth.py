"""`/api/auth`: login, token refresh and logout, the caller, WebSocket tickets, API keys.

Login and refresh are the only public `/api` routes (server.auth.PUBLIC_ROUTES). When
the server has no `auth` section every route here answers 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.auth.model import ApiKey, User
from engine.auth.service import AuthService, Session
from engine.errors import Issue, NotFound, Unauthorized, ValidationFailed
from engine.views import iso
from server.auth import NOT_ENABLED, auth_enabled, require_principal
from server.errors import ORJSONResponse
from server.openapi import Endpoint
from server.routes import field_of, listing, path_param, read_json

MAX_NAME = 200


def service_of(request: Request) -> AuthService:
    if not auth_enabled(request):
        raise NotFound(NOT_ENABLED)
    service: AuthService = request.app.state.auth
    return service


def user_view(user: User, *, keys: int = 0) -> dict[str, Any]:
    """A user as `GET /api/users/{id}` shows it, with its authentication methods."""
    methods = (["password"] if user.password_hash else []) + (["api_key"] if keys else [])
    return {"user_id": user.user_id, "name": user.name, "email": user.email,
            "is_admin": user.is_admin, "groups": list(user.groups), "auth_methods": methods,
            "created_at": iso(user.created_at), "last_login_at": iso(user.last_login_at)}


def key_view(key: ApiKey) -> dict[str, Any]:
    """An API key as listed: never the key itself."""
    return {"prefix": key.prefix, "name": key.name, "user_id": key.user_id,
            "created_at": iso(key.created_at), "expires_at": iso(key.expires_at),
            "revoked_at": iso(key.revoked_at), "revoked": key.revoked_at is not None}


def _required(body: dict[str, Any], name: str) -> str:
    value = field_of(body, name, str, "a string")
    if not value:
        raise ValidationFailed(issues=[Issue(message=f"'{name}' is required", path=name)])
    return str(value)


def _session(session: Session) -> Response:
    return ORJSONResponse({
        "access_token": session.access_token, "refresh_token": session.refresh_token,
        "token_type": "Bearer", "expires_in": int(session.expires_in),
        "user": user_view(session.user)})


async def login(request: Request) -> Response:
    service = service_of(request)
    body = await read_json(request)
    email, password = _required(body, "email"), _required(body, "password")
    ip = request.client.host if request.client is not None else "unknown"
    return _session(await service.login(email, password, ip))


async def refresh(request: Request) -> Response:
    service = service_of(request)
    body = await read_json(request)
    return _session(await service.refresh(_required(body, "refresh_token")))


async def logout(request: Request) -> Response:
    service = service_of(request)
    principal = require_principal(request)
    body = await read_json(request)
    token = field_of(body, "refresh_token", str, "a string")
    revoked = await service.logout(principal.user, token or None)
    return ORJSONResponse({"logged_out": True, "revoked_tokens": revoked})


async def me(request: Request) -> Response:
    service = service_of(request)
    principal = require_principal(request)
    keys = await service.repo.list_api_keys(principal.user.user_id)
    return ORJSONResponse({**user_view(principal.user, keys=len(keys)), "via": principal.via})


async def ws_ticket(request: Request) -> Response:
    service = service_of(request)
    principal = require_principal(request)
    ticket = await service.issue_ticket(principal.user)
    return ORJSONResponse({"ticket": ticket, "expires_in": int(service.settings.ticket_ttl)})


def _expiry(body: dict[str, Any]) -> float | None:
    raw = field_of(body, "expires_at", str, "an ISO 8601 time")
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationFailed(issues=[Issue(message="'expires_at' must be an ISO 8601 time",
                                             path="expires_at")]) from None
    if value.tzinfo is None:
        raise ValidationFailed(issues=[Issue(message="'expires_at' needs a UTC offset or Z",
                                             path="expires_at")])
    return value.timestamp()


async def create_key(request: Request) -> Response:
    service = service_of(request)
    principal = require_principal(request)
    body = await read_json(request)
    name = _required(body, "name")
    if len(name) > MAX_NAME:
        raise ValidationFailed(issues=[Issue(message=f"'name' is longer than {MAX_NAME}",
                                             path="name")])
    if principal.via == "api_key":
        raise Unauthorized("an API key cannot create API keys; log in with a password")
    record, key = await service.create_key(principal.user, name, _expiry(body))
    return ORJSONResponse({**key_view(record), "key": key})


async def list_keys(request: Request) -> Response:
    service = service_of(request)
    principal = require_principal(request)
    everyone = principal.user.is_admin and request.query_params.get("all") == "true"
    keys = await service.repo.list_api_keys(None if everyone else principal.user.user_id)
    return listing([key_view(k) for k in keys], len(keys))


async def revoke_key(request: Request) -> Response:
    service = service_of(request)
    principal = require_principal(request)
    key = await service.revoke_key(principal.user, path_param(request, "prefix"))
    return ORJSONResponse(key_view(key))


_USER = {"type": "object", "properties": {
    "user_id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"},
    "is_admin": {"type": "boolean"}, "groups": {"type": "array", "items": {"type": "string"}},
    "auth_methods": {"type": "array", "items": {"type": "string"}},
    "created_at": {"type": "string"}, "last_login_at": {"type": ["string", "null"]}}}
_SESSION = {"type": "object", "properties": {
    "access_token": {"type": "string"}, "refresh_token": {"type": "string"},
    "token_type": {"type": "string"}, "expires_in": {"type": "integer"}, "user": _USER}}
_KEY = {"type": "object", "properties": {
    "prefix": {"type": "string"}, "name": {"type": "string"}, "user_id": {"type": "string"},
    "created_at": {"type": "string"}, "expires_at": {"type": ["string", "null"]},
    "revoked_at": {"type": ["string", "null"]}, "revoked": {"type": "boolean"},
    "key": {"type": "string", "description": "only in the answer to create; shown once"}}}

ENDPOINTS = (
    Endpoint("POST", "/api/auth/login", login, "Log in with email and password",
             (200, 404), body={"type": "object", "required": ["email", "password"],
                               "properties": {"email": {"type": "string"},
                                              "password": {"type": "string"}}},
             response=_SESSION, tag="auth"),
    Endpoint("POST", "/api/auth/refresh", refresh,
             "Trade a refresh token for new tokens (each refresh token works once)",
             (200, 404), body={"type": "object", "required": ["refresh_token"],
                               "properties": {"refresh_token": {"type": "string"}}},
             response=_SESSION, tag="auth"),
    Endpoint("POST", "/api/auth/logout", logout,
             "Revoke a refresh token's login (or every login of the caller)", (200, 404),
             body={"type": "object", "properties": {"refresh_token": {"type": "string"}}},
             response={"type": "object"}, tag="auth"),
    Endpoint("GET", "/api/auth/me", me, "The caller", (200, 404), response=_USER, tag="auth"),
    Endpoint("POST", "/api/auth/ws-ticket", ws_ticket,
             "A short-lived single-use ticket for a WebSocket (`?ticket=`)", (200, 404),
             response={"type": "object", "properties": {"ticket": {"type": "string"},
                                                        "expires_in": {"type": "integer"}}},
             tag="auth"),
    Endpoint("GET", "/api/auth/keys", list_keys, "The caller's API keys (admins: ?all=true)",
             (200, 404), response={"type": "array", "items": _KEY}, tag="auth"),
    Endpoint("POST", "/api/auth/keys", create_key,
             "Create an API key (the key is shown once)", (200, 404),
             body={"type": "object", "required": ["name"], "properties": {
                 "name": {"type": "string"},
                 "expires_at": {"type": "string", "format": "date-time"}}},
             response=_KEY, tag="auth"),
    Endpoint("DELETE", "/api/auth/keys/{prefix}", revoke_key, "Revoke an API key by prefix",
             (200, 404), response=_KEY, tag="auth"),
)

# Statuses that only exist when auth is enabled (added to /openapi.json then).
AUTH_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/api/auth/login"): (400, 401, 429),
    ("POST", "/api/auth/refresh"): (400, 401),
    ("POST", "/api/auth/logout"): (400,),
    ("POST", "/api/auth/keys"): (400,),
}
