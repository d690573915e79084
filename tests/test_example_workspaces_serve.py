"""The example workspaces load the way the server loads them: validated, with their
secrets and connections resolved (the default config serves all of them)."""

from __future__ import annotations

from pathlib import Path

from engine.workspaces import WorkspaceRegistry
from server.config import load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_workspace_of_the_default_config_loads_without_error() -> None:
    settings = load_settings(ROOT / "server-config.yaml", environ={})
    sources = {name: Path(ws.path) for name, ws in settings.workspaces.items()}
    assert {"default", "data-pipeline", "ops"} <= set(sources)
    registry = WorkspaceRegistry(sources, environ={})
    registry.load_all()
    for ws in registry.all():
        assert ws.load_error == [], f"{ws.name}: {ws.load_error_text()}"
        assert ws.current is not None and ws.current.spec.tasks
