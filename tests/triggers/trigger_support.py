"""Helpers of the trigger tests: write a workspace folder, open a runtime on a FakeClock."""

from __future__ import annotations

import textwrap
from pathlib import Path

from engine.runtime import Runtime, RuntimeOptions
from engine.testing import FakeClock


def write_workspace(folder: Path, yaml_text: str, name: str = "main.yaml") -> Path:
    """A workspace folder whose `.workflows/<name>` holds `yaml_text` (dedented)."""
    target = folder / ".workflows" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    return folder


def make_runtime(tmp: Path, workspace: Path, clock: FakeClock, *, db_url: str | None = None,
                 concurrency: int = 2, ws_name: str = "ws") -> Runtime:
    """A runtime over `workspace` (named `ws_name`) with the fake clock."""
    return Runtime(RuntimeOptions(
        db_url=db_url or "memory://", logs_dir=tmp / "logs", artifacts_dir=tmp / "artifacts",
        workspaces={ws_name: workspace}, concurrency=concurrency,
    ), clock=clock)
