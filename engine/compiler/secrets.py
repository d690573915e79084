"""Workspace secrets and connections, resolved for a running server.

`secrets:` values may be templates over the process environment (`<< env.DB_PASSWORD >>`);
connection properties may be templates over the secrets (`<< secret.DB_PASSWORD >>`) and
take their defaults and types from their connection type. `secret_values` lists every
value that must never appear in a log line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from engine.compiler.inputs import coerce_input
from engine.compiler.templating import build_context, render_value
from engine.errors import InputInvalid, Issue, RenderError, WorkspaceInvalid
from engine.model import WorkspaceSpec


def resolve_secrets(spec: WorkspaceSpec, environ: Mapping[str, str]) -> dict[str, Any]:
    """Render the workspace's `secrets:` map with `env` in the context.

    Raises `RenderError` naming the secret (and the missing variable) when a template
    cannot be rendered, for example because an environment variable is not set.
    """
    context = build_context(input={}, env=dict(environ))
    out: dict[str, Any] = {}
    for name, value in spec.secrets.items():
        where = f"secrets.{name}"
        try:
            out[name] = render_value(value, context, where=where)
        except RenderError as exc:
            missing = exc.name or ""
            if missing.startswith(("env.", "env[")):
                variable = missing[4:].strip("[]'\"")
                message = f"secret '{name}' needs the environment variable {variable}, " \
                          "which is not set"
                raise RenderError(message, where=where, name=missing) from exc
            raise RenderError(f"secret '{name}': {exc.message}", name=exc.name) from exc
    return out


def resolve_connections(
    spec: WorkspaceSpec, secrets: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Every connection's properties: rendered with `secret` in the context, coerced by
    the connection type (which supplies defaults). Raises `WorkspaceInvalid` listing every
    connection property that does not fit."""
    context = build_context(input={}, secret=secrets)
    out: dict[str, dict[str, Any]] = {}
    issues: list[Issue] = []
    for name, connection in spec.connections.items():
        where = f"connections.{name}"
        props = render_value(dict(connection.model_extra or {}), context, where=where)
        schema = spec.connection_types.get(connection.type)
        if schema is None:
            issues.append(Issue(message=f"unknown connection type '{connection.type}'",
                                path=f"{where}.type"))
            continue
        try:
            out[name] = coerce_input(schema, props, secrets=secrets)
        except InputInvalid as exc:
            issues.extend(
                Issue(message=i.message, path=f"{where}.{i.path}", hint=i.hint)
                for i in exc.issues
            )
    if issues:
        raise WorkspaceInvalid(issues=issues)
    return out


def secret_values(
    secrets: Mapping[str, Any],
    connections: Mapping[str, Mapping[str, Any]],
    spec: WorkspaceSpec,
) -> list[str]:
    """Every secret value and every connection property marked `secret: true`, as text,
    longest first (so that a redactor replaces a longer secret before its substrings).
    Empty values are left out."""
    values: set[str] = set(_leaves(secrets))
    for name, props in connections.items():
        connection = spec.connections.get(name)
        schema = spec.connection_types.get(connection.type) if connection else None
        for prop, value in props.items():
            if schema is not None and prop in schema and schema[prop].secret:
                values.update(_leaves(value))
    values.discard("")
    return sorted(values, key=lambda v: (-len(v), v))


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif value is None or isinstance(value, bool):
        return  # redacting every "true" would hide more than it protects
    else:
        yield str(value)
