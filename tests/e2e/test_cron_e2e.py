"""A real server fires a real 2-second schedule, and reloads a folder when it changes."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import httpx
import pytest
from harness import ServerProcess

pytestmark = pytest.mark.e2e

WORKSPACE = """
tasks:
  beat:
    flow:
      tick: { type: shell, interpreter: sh, script: echo tick }
triggers:
  every-2s:
    type: scheduler
    cron: "*/2 * * * * *"
    task: beat
"""


def _trigger_jobs(client: httpx.Client) -> list[dict]:  # type: ignore[type-arg]
    jobs = client.get("/api/jobs", params={"limit": 100}).json()
    return [j for j in jobs if j.get("source_id") == "ws/every-2s"]


def test_a_two_second_schedule_fires_on_a_real_server(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "cron.yaml").write_text(textwrap.dedent(WORKSPACE), "utf-8")
    with ServerProcess(tmp_path / "server", workspaces={"ws": ws}) as server, \
            httpx.Client(base_url=server.url, timeout=10.0) as client:
        # Wait for three fires (about six seconds).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(_trigger_jobs(client)) < 3:
            time.sleep(0.5)
        jobs = _trigger_jobs(client)
        assert len(jobs) >= 3
        assert all(j["source_type"] == "trigger" for j in jobs)
        created = sorted(j["created_at"] for j in jobs)
        assert len(set(created)) == len(created)
        triggers = client.get("/api/workspaces/ws/triggers").json()
        assert len(triggers[0]["next_runs"]) == 5

        # Disable the trigger in the folder: the server notices and stops firing.
        (ws / ".workflows" / "cron.yaml").write_text(
            textwrap.dedent(WORKSPACE).replace("task: beat", "task: beat\n    enabled: false"),
            "utf-8")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listed = client.get("/api/workspaces/ws/triggers").json()
            if listed[0]["enabled"] is False:
                break
            time.sleep(0.3)
        assert listed[0]["enabled"] is False
        time.sleep(0.5)
        count = len(_trigger_jobs(client))
        time.sleep(3)
        assert len(_trigger_jobs(client)) == count
