"""`/api/users`: the user list and detail (reference shape plus auth methods), and the
administration of users (create, admin flag, groups) by admins.

Without an `auth` section the list is empty and every user is 404, as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.auth.model import User
from engine.auth.service import AuthService
from engine.errors import Issue, NotFound, ValidationFailed
from server.auth import auth_enabled, principal_of, require_admin
from server.errors import ORJSONResponse
from server.openapi import Endpoint, Param
from server.routes import field_of, listing, path_param, query_int, read_json
from server.routes.auth import service_of, user_view


def _service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


async def _view(service: AuthService, user: User) -> dict[str, Any]:
    keys = [k for k in await service.repo.list_api_keys(user.user_id) if k.revoked_at is None]
    return user_view(user, keys=len(keys))


async def list_users(request: Request) -> Response:
    limit = query_int(request, "limit", 50)
    offset = query_int(request, "offset", 0, maximum=2**31)
    if not auth_enabled(request):
        return listing([], 0)
    require_admin(request)
    service = _service(request)
    users, total = await service.repo.list_users(limit, offset)
    return listing([await _view(service, u) for u in users], total)


async def user_detail(request: Request) -> Response:
    user_id = path_param(request, "id")
    principal = principal_of(request)
    if not auth_enabled(request) or principal is None:
        raise NotFound(f"user {user_id!r} not found")
    if principal.user.user_id != user_id:
        require_admin(request)
    service = _service(request)
    user = await service.repo.get_user(user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found")
    return ORJSONResponse(await _view(service, user))


def _groups(body: dict[str, Any]) -> tuple[str, ...] | None:
    groups = field_of(body, "groups", list, "a list of strings")
    if groups is None:
        return None
    if not all(isinstance(g, str) and g and "\n" not in g for g in groups):
        raise ValidationFailed(issues=[Issue(message="'groups' must be a list of non-empty "
                                                     "strings", path="groups")])
    return tuple(dict.fromkeys(groups))


async def create_user(request: Request) -> Response:
    service = service_of(request)
    require_admin(request)
    body = await read_json(request)
    email = field_of(body, "email", str, "a string")
    if not email:
        raise ValidationFailed(issues=[Issue(message="'email' is required", path="email")])
    user = await service.create_user(
        email, field_of(body, "password", str, "a string"),
        field_of(body, "name", str, "a string"),
        is_admin=bool(field_of(body, "is_admin", bool, "a boolean")),
        groups=_groups(body) or ())
    return ORJSONResponse(await _view(service, user))


async def update_user(request: Request) -> Response:
    service = service_of(request)
    require_admin(request)
    user = await service.require_user(path_param(request, "id"))
    body = await read_json(request)
    changes: dict[str, Any] = {}
    is_admin = field_of(body, "is_admin", bool, "a boolean")
    if is_admin is not None:
        changes["is_admin"] = is_admin
    groups = _groups(body)
    if groups is not None:
        changes["groups"] = groups
    name = field_of(body, "name", str, "a string")
    if name:
        changes["name"] = name
    user = await service.update_user(dataclasses.replace(user, **changes))
    return ORJSONResponse(await _view(service, user))


_PAGING = (Param("limit", "Number of entries (default 50)", {"type": "integer", "minimum": 0}),
           Param("offset", "Pagination offset", {"type": "integer", "minimum": 0}))
_USER = {"type": "object", "properties": {
    "user_id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"},
    "is_admin": {"type": "boolean"}, "groups": {"type": "array", "items": {"type": "string"}},
    "auth_methods": {"type": "array", "items": {"type": "string"}}}}

ENDPOINTS = (
    Endpoint("GET", "/api/users", list_users, "List users with their auth methods (admins)",
             (200, 400), query=_PAGING, response={"type": "array", "items": _USER},
             tag="users"),
    Endpoint("POST", "/api/users", create_user, "Create a user (admins)", (200, 404),
             body={"type": "object", "required": ["email"], "properties": {
                 "email": {"type": "string"}, "password": {"type": "string"},
                 "name": {"type": "string"}, "is_admin": {"type": "boolean"},
                 "groups": {"type": "array", "items": {"type": "string"}}}},
             response=_USER, tag="users"),
    Endpoint("GET", "/api/users/{id}", user_detail, "A user and their auth methods",
             (200, 404), response=_USER, tag="users"),
    Endpoint("PATCH", "/api/users/{id}", update_user,
             "Set a user's admin flag, groups or name (admins)", (200, 404),
             body={"type": "object", "properties": {
                 "is_admin": {"type": "boolean"}, "name": {"type": "string"},
                 "groups": {"type": "array", "items": {"type": "string"}}}},
             response=_USER, tag="users"),
)

AUTH_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("GET", "/api/users"): (403,),
    ("POST", "/api/users"): (400, 403, 409),
    ("GET", "/api/users/{id}"): (403,),
    ("PATCH", "/api/users/{id}"): (400, 403),
}
