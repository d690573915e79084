"""`workflows/build` end to end: a recorded login + extract log, replayed in a real Chromium
against the demo site, deployed, then run with `jobs/create`."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from harness import ServerProcess, free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DEMO = Path(__file__).resolve().parents[2] / "workspaces" / "browser-demo" / "demo_site.py"


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    spec = importlib.util.spec_from_file_location("demo_site_builds", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(module.create_app(), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, name="demo-site", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "demo site did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def call(client: httpx.Client, route: str, body: dict[str, Any] | None = None) -> Any:
    r = client.post(f"/v1/{route}", json={"json": body or {}})
    assert r.status_code == 200, f"{route}: {r.status_code} {r.text}"
    return r.json()["json"]


def wait_job(client: httpx.Client, job_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = call(client, "jobs/get", {"id": job_id})
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def recorded_log(site: str) -> str:
    """What a recorder saw: a login (with a typo corrected) and two values read."""
    actions: list[dict[str, Any]] = [
        {"action": "goto", "url": f"{site}/"},
        {"action": "fill", "selector": "#username", "value": "alcie"},
        {"action": "fill", "selector": "#username", "value": "alice"},
        {"action": "fill", "selector": "#password", "value": "wonderland"},
        {"action": "select", "selector": "#region", "value": "eu"},
        {"action": "click", "selector": "#sign-in", "url": f"{site}/orders"},
        {"action": "extract", "selector": "#welcome", "as": "welcome"},
        {"action": "extract", "selector": "#orders .id", "as": "order_ids", "all": True},
    ]
    return "\n".join(orjson.dumps(a).decode() for a in actions)


def wait_build(client: httpx.Client, build_id: str, timeout: float = 45.0) -> dict[str, Any]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = call(client, "workflows/buildStatus", {"build_id": build_id})
        if not seen or seen[-1] != status["status"]:
            seen.append(status["status"])
        if status["status"] in ("ready", "failed"):
            status["seen"] = seen
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_build_replays_deploys_and_runs(make_server: Callable[..., ServerProcess],
                                        chromium_path: str, site: str) -> None:
    server = make_server(settings={"browser": {"executable": chromium_path}})
    with httpx.Client(base_url=server.url, timeout=15.0) as client:
        built = call(client, "workflows/build", {
            "descriptions": ["Sign in to the back office and read the orders"],
            "initial_url": f"{site}/", "params": {"username": "alice", "password": "wonderland"},
            "action_log": recorded_log(site), "network_log": []})
        assert built["status"] in ("pending", "agent_running")
        status = wait_build(client, built["build_id"])
        assert status["status"] == "ready", status
        assert set(status["seen"]) <= {"pending", "agent_running", "deploying", "ready"}
        assert status["workflow_name"] == "sign-in-to-the-back-office-and-read-the-orders"
        # The replay ran every compiled step, and the typed values became inputs.
        assert [s["status"] for s in status["attempted_steps"]] == ["ok"] * 7
        assert [s["action"] for s in status["attempted_steps"]] == [
            "goto", "fill", "fill", "select", "click", "extract", "extract"]
        details = status["details"]
        assert details["input"] == {"password": {"type": "string", "required": True,
                                                 "secret": True},
                                    "username": {"type": "string", "required": True}}
        assert details["steps"][1] == {"fill": {"selector": "#username",
                                                "value": "<< input.username >>"}}
        assert details["replay_output"]["run"]["order_ids"] == ["A-1001", "A-1002", "A-1003"]
        # The replay was a real job, and the password never reached its log.
        logs = client.get(f"/api/jobs/{details['replay_job_id']}/logs").text
        assert "wonderland" not in logs
        # The deployed workflow runs with jobs/create, with other params.
        name = status["workflow_name"]
        schema = call(client, "workflows/get", {"workflow": name})["input_schema"]
        assert schema["required"] == ["password", "username"]
        assert call(client, "deployments/sync", {"id": status["deployment_id"]})[
            "status"] == "ready"
        made = call(client, "jobs/create", {"workflow": name, "params": {
            "username": "alice", "password": "wonderland"}})
        job = wait_job(client, made["job_id"], timeout=40)
        assert job["status"] == "completed", job
        assert job["result"]["run"]["welcome"] == "Welcome, alice"
        bad = call(client, "jobs/create", {"workflow": name, "params": {
            "username": "alice", "password": "wrong"}})
        assert wait_job(client, bad["job_id"], timeout=50)["status"] == "failed"


def test_a_replay_that_fails_is_not_deployed(make_server: Callable[..., ServerProcess],
                                             chromium_path: str) -> None:
    server = make_server(settings={"browser": {"executable": chromium_path}})
    dead = f"http://127.0.0.1:{free_port()}/"
    with httpx.Client(base_url=server.url, timeout=15.0) as client:
        built = call(client, "workflows/build", {
            "descriptions": ["Nothing listens there"], "initial_url": dead,
            "workflow_name": "unreachable",
            "action_log": '{"action": "click", "selector": "#go"}'})
        status = wait_build(client, built["build_id"])
        assert status["status"] == "failed" and status["deployment_id"] is None
        assert [s["status"] for s in status["attempted_steps"]] == ["failed", "not_run"]
        assert "replay" in status["error"] and status["details"]["diagnosis"]
        assert call(client, "workflows/list")["deployed_workflows"] == []
        # A log that does not compile is refused at once.
        r = client.post("/v1/workflows/build", json={"json": {
            "descriptions": ["x"], "initial_url": dead, "action_log": "{not json"}})
        assert r.status_code == 400 and "action_log line 1" in r.text


def test_without_an_action_log_the_configured_llm_writes_one(
        make_server: Callable[..., ServerProcess], chromium_path: str, site: str) -> None:
    asked: list[dict[str, Any]] = []

    async def completions(request: Request) -> JSONResponse:
        asked.append(await request.json())
        answer = f"Here it is:\n```jsonl\n{recorded_log(site)}\n```\n"
        return JSONResponse({"choices": [{"message": {"role": "assistant",
                                                      "content": answer}}]})

    port = free_port()
    llm = uvicorn.Server(uvicorn.Config(
        Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])]),
        host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=llm.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not llm.started:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        server = make_server(settings={"browser": {"executable": chromium_path}, "debug": {
            "llm": {"endpoint": f"http://127.0.0.1:{port}/v1", "model": "builder"}}})
        with httpx.Client(base_url=server.url, timeout=15.0) as client:
            built = call(client, "workflows/build", {
                "descriptions": ["Sign in and read the orders"], "initial_url": f"{site}/",
                "params": {"username": "alice", "password": "wonderland"}})
            status = wait_build(client, built["build_id"])
        assert status["status"] == "ready", status
        assert status["details"]["action_log_from"] == "llm"
        assert [s["status"] for s in status["attempted_steps"]] == ["ok"] * 7
        assert len(asked) == 1 and asked[0]["model"] == "builder"
        assert "Sign in and read the orders" in asked[0]["messages"][0]["content"]
    finally:
        llm.should_exit = True
        thread.join(5)
