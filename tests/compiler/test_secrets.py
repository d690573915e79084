"""Tests of engine.compiler.secrets: secrets from the environment, connections, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.compiler.secrets import resolve_connections, resolve_secrets, secret_values
from engine.compiler.validate import LoadedWorkspace, load_workspace
from engine.errors import RenderError, WorkspaceInvalid
from engine.model import WorkspaceSpec

FIXTURES = Path(__file__).parent.parent / "fixtures" / "workspaces"


@pytest.fixture(scope="module")
def ws() -> LoadedWorkspace:
    return load_workspace(FIXTURES / "valid")


def test_secrets_render_from_the_environment(ws: LoadedWorkspace) -> None:
    secrets = resolve_secrets(ws.spec, {"PARTITUR_TEST_DB_PASSWORD": "s3cret"})
    assert secrets == {"DB_PASSWORD": "s3cret", "API_TOKEN": "tok-123"}


def test_missing_environment_variable_names_the_secret(ws: LoadedWorkspace) -> None:
    with pytest.raises(RenderError) as raised:
        resolve_secrets(ws.spec, {})
    assert raised.value.where == "secrets.DB_PASSWORD"
    assert raised.value.message == (
        "secrets.DB_PASSWORD: secret 'DB_PASSWORD' needs the environment variable "
        "PARTITUR_TEST_DB_PASSWORD, which is not set"
    )


def test_connections_render_secrets_coerce_and_take_defaults(ws: LoadedWorkspace) -> None:
    secrets = {"DB_PASSWORD": "s3cret", "API_TOKEN": "tok-123"}
    connections = resolve_connections(ws.spec, secrets)
    assert connections == {"main-db": {"host": "db.internal", "port": 6543, "password": "s3cret"}}
    assert secret_values(secrets, connections, ws.spec) == ["tok-123", "s3cret"]


def test_bad_connection_property_is_reported() -> None:
    spec = WorkspaceSpec.model_validate({
        "connection_types": {"api": {"port": {"type": "integer", "required": True}}},
        "connections": {"a": {"type": "api", "port": "<< secret.PORT >>"}},
    })
    with pytest.raises(WorkspaceInvalid) as raised:
        resolve_connections(spec, {"PORT": "eighty"})
    assert [(i.path, i.message) for i in raised.value.issues] == [
        ("connections.a.port", "expected an integer, got 'eighty'")
    ]


def test_secret_values_flatten_nested_secrets_and_skip_empty_ones() -> None:
    spec = WorkspaceSpec()
    values = secret_values({"a": {"user": "u-1", "keys": ["k1", ""]}, "b": None, "c": True},
                           {}, spec)
    assert values == ["u-1", "k1"]
