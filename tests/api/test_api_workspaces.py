"""Workspaces, tasks and triggers over real HTTP (reference shapes, next_runs, errors)."""

from __future__ import annotations

from datetime import datetime

import httpx
from api_helpers import execute


def test_workspaces_list_counts_and_load_errors(client: httpx.Client) -> None:
    r = client.get("/api/workspaces")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    items = {w["name"]: w for w in r.json()}
    assert r.headers["X-Total-Count"] == str(len(items)) == "3"
    main = items["main"]
    assert main["tasks_count"] == 9 and main["actions_count"] == 2
    assert main["triggers_count"] == 3 and main["revision"] and main["load_error"] is None
    assert "unknown action 'does-not-exist'" in items["broken"]["load_error"]
    assert ".workflows/bad.yaml:5:17" in items["broken"]["load_error"]  # file:line:column
    assert "git" in items["remote"]["load_error"]


def test_task_list_fields(client: httpx.Client) -> None:
    r = client.get("/api/workspaces/main/tasks")
    tasks = {t["name"]: t for t in r.json()}
    assert r.headers["X-Total-Count"] == str(len(tasks))
    assert tasks["hello"] == {"name": "hello", "workspace": "main", "mode": "distributed",
                              "has_triggers": True, "folder": "basics"}
    assert tasks["slow"]["has_triggers"] is False  # its only trigger is disabled
    assert "folder" not in tasks["slow"]


def test_task_detail_input_flow_and_next_runs(client: httpx.Client) -> None:
    detail = client.get("/api/workspaces/main/tasks/hello").json()
    assert detail["name"] == "hello" and detail["mode"] == "distributed"
    assert detail["input"] == {"name": {"type": "string", "default": "World"}}
    assert detail["flow"]["say-hello"] == {"action": "greet",
                                           "input": {"name": "<< input.name >>"}}
    triggers = {t["name"]: t for t in detail["triggers"]}
    assert set(triggers) == {"nightly", "oslo"}
    nightly = triggers["nightly"]
    assert nightly["type"] == "scheduler" and nightly["cron"] == "0 0 2 * * *"
    assert nightly["enabled"] is True and nightly["input"] == {"name": "Night"}
    runs = [datetime.fromisoformat(t) for t in nightly["next_runs"]]
    assert len(runs) == 5 and runs == sorted(runs)
    assert all(t.utcoffset() is not None and t.hour == 2 and t.minute == 0 for t in runs)
    oslo = [datetime.fromisoformat(t) for t in triggers["oslo"]["next_runs"]]
    assert len(oslo) == 5 and all((t.hour, t.minute) in {(2, 30), (3, 0)} for t in oslo)
    assert {t.utcoffset().total_seconds() for t in oslo} <= {3600.0, 7200.0}  # type: ignore[union-attr]


def test_inline_steps_show_their_action_fields(client: httpx.Client) -> None:
    flow = client.get("/api/workspaces/main/tasks/typed").json()["flow"]
    assert flow["show"]["type"] == "shell" and "echo count" in flow["show"]["script"]


def test_triggers_list(client: httpx.Client) -> None:
    r = client.get("/api/workspaces/main/triggers")
    triggers = {t["name"]: t for t in r.json()}
    assert r.headers["X-Total-Count"] == "3"
    assert triggers["off"]["enabled"] is False and triggers["off"]["next_runs"] == []
    assert len(triggers["nightly"]["next_runs"]) == 5


def test_unknown_workspace_and_task_are_404_json(client: httpx.Client) -> None:
    for path in ("/api/workspaces/nope/tasks", "/api/workspaces/main/tasks/nope",
                 "/api/workspaces/nope/triggers"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/json")
        assert "error" in r.json()
    r = client.post("/api/workspaces/main/tasks/nope/execute", json={})
    assert r.status_code == 404 and "nope" in r.json()["error"]


def test_broken_workspace_answers_409_with_the_load_error(client: httpx.Client) -> None:
    # A git workspace whose fetch failed does not load either.
    assert client.get("/api/workspaces/remote/tasks").status_code == 409
    r = client.post("/api/workspaces/broken/tasks/nope/execute", json={})
    assert r.status_code == 409
    assert "does-not-exist" in r.json()["error"]


def test_refresh_reloads(client: httpx.Client) -> None:
    r = client.post("/api/workspaces/main/refresh")
    assert r.status_code == 200 and r.json()["name"] == "main"
    assert r.json()["load_error"] is None
    assert client.post("/api/workspaces/nope/refresh").status_code == 404
    # The workspace still serves after a reload.
    assert execute(client, "hello")
