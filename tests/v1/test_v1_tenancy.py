"""Cloud API tenancy over HTTP, with auth and API keys: for every noun (deployments,
workflows, jobs, logs, schedules, credentials, webhooks and their deliveries,
recordings, builds, sessions), the keys of one tenant never see another's objects —
another tenant's object answers 404 like one that does not exist — and the default
tenant is there without setup.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness import ServerProcess
from receiver import Receiver, close
from v1_helpers import WORKFLOWS, call, deploy, wait_job, workspace

ADMIN = {"email": "admin@example.com", "password": "admin-password-1"}
ACME_ONLY = WORKFLOWS + """
  acme_only:
    flow:
      one:
        type: shell
        script: echo acme
"""


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with auth; API keys of the tenants acme and globex, and of the admin
    (in no tenant group: the default tenant)."""
    server = ServerProcess(tmp_path_factory.mktemp("tenancy"), settings={
        "auth": {"initial_user": ADMIN}, "secrets_key": "tenancy-key",
        "callbacks": {"allow_private": True}, "sessions": {"max_per_tenant": 1}}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=15.0) as c:
            yield {"client": c, "keys": _keys(c), "server": server}
    finally:
        server.close()


def _keys(c: httpx.Client) -> dict[str, dict[str, str]]:
    """API keys of the admin (default tenant), of `plain` (a user in no tenant group: the
    default tenant) and of users in the tenants acme and globex."""
    bearer = {"Authorization": "Bearer " + c.post(
        "/api/auth/login", json=ADMIN).json()["access_token"]}
    keys: dict[str, dict[str, str]] = {}
    r = c.post("/api/auth/keys", headers=bearer, json={"name": "admin"})
    assert r.status_code == 200, r.text
    keys["default"] = {"x-api-key": r.json()["key"]}
    for name in ("acme", "globex", "plain"):
        user = {"email": f"{name}@example.com", "password": "user-password-1"}
        groups = [] if name == "plain" else [f"tenant:{name}"]
        r = c.post("/api/users", headers=bearer, json={**user, "groups": groups})
        assert r.status_code == 200, r.text
        token = c.post("/api/auth/login", json=user).json()["access_token"]
        r = c.post("/api/auth/keys", headers={"Authorization": f"Bearer {token}"},
                   json={"name": "k"})
        assert r.status_code == 200, r.text
        keys[name] = {"x-api-key": r.json()["key"]}
    return keys


def _missing(c: httpx.Client, route: str, body: dict[str, Any],
             headers: dict[str, str]) -> None:
    r = c.post(f"/v1/{route}", json={"json": body}, headers=headers)
    assert r.status_code == 404, f"{route}: {r.status_code} {r.text}"
    err = r.json()["json"]
    assert err["code"] == "NOT_FOUND" and err["message"]


def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_every_noun_is_scoped_to_its_tenant(tenants: dict[str, Any]) -> None:
    c: httpx.Client = tenants["client"]
    acme, globex = tenants["keys"]["acme"], tenants["keys"]["globex"]
    rx_a, rx_g = Receiver(), Receiver()
    try:
        # --- acme's objects -----------------------------------------------------------
        a_dep = deploy(c, workspace(ACME_ONLY), headers=acme)
        a_hook = call(c, "webhooks/create", {"url": rx_a.url + "/a"}, headers=acme)["webhook"]
        a_cred = call(c, "credentials/create", {"name": "api_token", "value": "acme-value"},
                      headers=acme)["credential"]
        a_sched = call(c, "schedules/create", {"workflow": "greet", "params": {"name": "s"},
                                               "cron_expr": "0 3 * * *", "enabled": False},
                       headers=acme)["schedule"]
        a_job = call(c, "jobs/create", {"workflow": "boom", "params": {}, "nonce": "same"},
                     headers=acme)["job_id"]
        assert wait_job(c, a_job, headers=acme)["status"] == "failed"
        a_build = call(c, "workflows/build", {"descriptions": ["read the orders"]},
                       headers=acme)["build_id"]
        _wait(lambda: any(orjson.loads(r["body"])["job_id"] == a_job for r in rx_a.requests))
        a_delivery = call(c, "webhooks/deliveries", {"job_id": a_job},
                          headers=acme)["deliveries"][0]["id"]

        # --- globex: same workflow names, its own deployment, endpoint and nonce -------
        g_dep = deploy(c, headers=globex)
        call(c, "webhooks/create", {"url": rx_g.url + "/g"}, headers=globex)
        g_job = call(c, "jobs/create", {"workflow": "boom", "params": {}, "nonce": "same"},
                     headers=globex)["job_id"]
        assert g_job != a_job  # a nonce is per tenant
        assert wait_job(c, g_job, headers=globex)["deployment_id"] == g_dep["id"]
        _wait(lambda: any(orjson.loads(r["body"])["job_id"] == g_job for r in rx_g.requests))

        # deployments
        assert [d["id"] for d in call(c, "deployments/list", headers=globex)
                ["deployments"]] == [g_dep["id"]]
        _missing(c, "deployments/sync", {"id": a_dep["id"]}, globex)
        _missing(c, "deployments/pin", {"workflow": "greet", "deployment_id": a_dep["id"]},
                 globex)
        _missing(c, "deployments/rollback", {"workflow": "greet",
                                             "deployment_id": a_dep["id"]}, globex)
        # workflows
        listed = call(c, "workflows/list", headers=globex)
        assert {w["deployment_id"] for w in listed["deployed_workflows"]} == {g_dep["id"]}
        assert "acme_only" not in [w["name"] for w in listed["deployed_workflows"]]
        assert listed["in_progress_builds"] == []
        assert call(c, "workflows/get", {"workflow": "greet"},
                    headers=globex)["deployment_id"] == g_dep["id"]
        _missing(c, "workflows/get", {"workflow": "acme_only"}, globex)
        assert call(c, "workflows/delete", {"workflow": "acme_only"},
                    headers=globex)["success"] is False
        assert call(c, "workflows/get", {"workflow": "acme_only"},
                    headers=acme)["deployment_id"] == a_dep["id"]
        _missing(c, "workflows/buildStatus", {"build_id": a_build}, globex)
        _missing(c, "jobs/create", {"workflow": "acme_only", "params": {}}, globex)
        # jobs
        assert [j["job_id"] for j in call(c, "jobs/list", {"limit": 100},
                                          headers=globex)["jobs"]] == [g_job]
        for route in ("jobs/get", "jobs/cancel", "jobs/debugReport"):
            _missing(c, route, {"id": a_job}, globex)
        # logs: by job id, recent jobs, and a page token naming another tenant's job
        _missing(c, "logs/list", {"jobId": a_job}, globex)
        recent = call(c, "logs/list", {"limit": 1000}, headers=globex)["logs"]
        assert recent and {e["jobId"] for e in recent} == {g_job}
        first = call(c, "logs/list", {"jobId": a_job, "limit": 1}, headers=acme)
        assert first["nextPageToken"]
        forged = call(c, "logs/list", {"pageToken": first["nextPageToken"]}, headers=globex)
        assert forged["logs"] == []
        # recordings
        _missing(c, "recordings/get", {"job_id": a_job}, globex)
        # schedules
        assert call(c, "schedules/list", headers=globex)["schedules"] == []
        for route, body in (("schedules/get", {"id": a_sched["id"]}),
                            ("schedules/update", {"id": a_sched["id"], "enabled": True}),
                            ("schedules/delete", {"id": a_sched["id"]})):
            _missing(c, route, body, globex)
        assert call(c, "schedules/get", {"id": a_sched["id"]},
                    headers=acme)["schedule"]["enabled"] is False
        # credentials: the same name is a different credential in each tenant
        assert call(c, "credentials/list", headers=globex)["credentials"] == []
        for route, body in (("credentials/get", {"name": "api_token"}),
                            ("credentials/get", {"id": a_cred["id"]}),
                            ("credentials/update", {"id": a_cred["id"], "value": "stolen"}),
                            ("credentials/delete", {"name": "api_token"}),
                            ("credentials/delete", {"id": a_cred["id"]})):
            _missing(c, route, body, globex)
        upserted = call(c, "credentials/upsert", {"name": "api_token", "value": "globex-value"},
                        headers=globex)
        assert upserted["overwritten"] is False
        assert upserted["credential"]["id"] != a_cred["id"]
        assert call(c, "credentials/get", {"name": "api_token"},
                    headers=acme)["value"] == "acme-value"
        # webhooks and deliveries
        hooks = call(c, "webhooks/list", headers=globex)["webhooks"]
        assert a_hook["id"] not in [h["id"] for h in hooks] and len(hooks) == 1
        _missing(c, "webhooks/update", {"id": a_hook["id"], "active": False}, globex)
        _missing(c, "webhooks/delete", {"id": a_hook["id"]}, globex)
        g_log = call(c, "webhooks/deliveries", headers=globex)["deliveries"]
        assert g_log and {d["job_id"] for d in g_log} == {g_job}
        assert call(c, "webhooks/deliveries", {"job_id": a_job},
                    headers=globex)["deliveries"] == []
        assert call(c, "webhooks/deliveries", {"webhook_id": a_hook["id"]},
                    headers=globex)["deliveries"] == []
        _missing(c, "webhooks/redeliver", {"id": a_delivery}, globex)
        # each tenant's endpoint got its own tenant's jobs only
        assert {orjson.loads(r["body"])["job_id"] for r in rx_a.requests} == {a_job}
        assert {orjson.loads(r["body"])["job_id"] for r in rx_g.requests} == {g_job}

        # --- the default tenant (a user in no tenant group) sees neither ---------------
        default = tenants["keys"]["default"]
        assert call(c, "deployments/list", headers=default)["deployments"] == []
        assert call(c, "jobs/list", headers=default)["jobs"] == []
        assert call(c, "webhooks/list", headers=default)["webhooks"] == []
        _missing(c, "jobs/get", {"id": g_job}, default)
    finally:
        close(rx_a)
        close(rx_g)


def test_the_workspace_api_keeps_tenants_apart(tenants: dict[str, Any]) -> None:
    """The same keys on `/api`: another tenant's deployments (workspaces), their tasks and
    jobs, logs and events are not found, and lists leave them out."""
    c: httpx.Client = tenants["client"]
    keys = tenants["keys"]
    dep = deploy(c, headers=keys["acme"])
    job = call(c, "jobs/create", {"workflow": "greet", "params": {"name": "api"}},
               headers=keys["acme"])["job_id"]
    wait_job(c, job, headers=keys["acme"])
    workspace = c.get(f"/api/jobs/{job}", headers=keys["acme"]).json()["workspace"]
    assert dep["id"] in workspace
    paths = (f"/api/jobs/{job}", f"/api/jobs/{job}/logs", f"/api/jobs/{job}/events",
             f"/api/workspaces/{workspace}/tasks", f"/api/workspaces/{workspace}/tasks/greet",
             f"/api/workspaces/{workspace}/triggers")
    for path in paths:
        assert c.get(path, headers=keys["acme"]).status_code == 200, path
    for other in ("globex", "plain"):
        h = keys[other]
        for path in paths:
            assert c.get(path, headers=h).status_code == 404, (other, path)
        r = c.post(f"/api/workspaces/{workspace}/tasks/greet/execute", headers=h,
                   json={"input": {"name": "x"}})
        assert r.status_code == 404, (other, r.text)
        assert job not in [j["job_id"] for j in c.get("/api/jobs", headers=h).json()]
        assert workspace not in [w["name"] for w in c.get("/api/workspaces",
                                                          headers=h).json()]
    # Its own tenant, and an administrator, see it.
    assert c.get(f"/api/jobs/{job}/logs", headers=keys["acme"]).status_code == 200
    assert job in [j["job_id"] for j in c.get("/api/jobs", headers=keys["acme"]).json()]
    assert workspace in [w["name"] for w in c.get("/api/workspaces",
                                                  headers=keys["acme"]).json()]
    assert c.get(f"/api/jobs/{job}", headers=keys["default"]).status_code == 200


def test_keys_are_required_except_for_telemetry(tenants: dict[str, Any]) -> None:
    c: httpx.Client = tenants["client"]
    for headers in ({}, {"x-api-key": "pk_wrong"}):
        r = c.post("/v1/jobs/list", json={"json": {}}, headers=headers)
        assert r.status_code == 401
        err = r.json()["json"]
        assert err["code"] == "UNAUTHORIZED" and err["status"] == 401 and err["message"]
    # Clients send CLI telemetry without a key: nothing is recorded, nothing is refused.
    r = c.post("/v1/telemetry/recordCliEvent", json={"json": {"event": "deploy"}})
    assert r.status_code == 204 and r.content == b""
    with_key = c.post("/v1/telemetry/recordCliEvent", json={"json": {}},
                      headers=tenants["keys"]["acme"])
    assert with_key.status_code == 200
    # Bearer works as well as x-api-key.
    key = tenants["keys"]["acme"]["x-api-key"]
    assert call(c, "jobs/list", headers={"Authorization": f"Bearer {key}"})["jobs"] is not None
    # A revoked key stops working at once.
    token = c.post("/api/auth/login", json={"email": "acme@example.com",
                                            "password": "user-password-1"}).json()["access_token"]
    made = c.post("/api/auth/keys", headers={"Authorization": f"Bearer {token}"},
                  json={"name": "short-lived"}).json()
    short = {"x-api-key": made["key"]}
    assert call(c, "deployments/list", headers=short)["deployments"] is not None
    prefix = made.get("prefix") or made["key"].split("_")[1]
    r = c.delete(f"/api/auth/keys/{prefix}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code in (200, 204), r.text
    r = c.post("/v1/deployments/list", json={"json": {}}, headers=short)
    assert r.status_code == 401 and r.json()["json"]["code"] == "UNAUTHORIZED"


def test_sessions_are_scoped_to_their_tenant(tenants: dict[str, Any],
                                              chromium_path: str) -> None:
    c: httpx.Client = tenants["client"]
    acme, globex = tenants["keys"]["acme"], tenants["keys"]["globex"]
    made = call(c, "sessions/create", {"timeout_seconds": 60}, headers=acme)
    try:
        _missing(c, "sessions/get", {"session_id": made["session_id"]}, globex)
        _missing(c, "recordings/get", {"session_id": made["session_id"]}, globex)
        _missing(c, "sessions/close", {"session_id": made["session_id"]}, globex)
        assert call(c, "sessions/list", headers=globex)["sessions"] == []
        assert [s["session_id"] for s in call(c, "sessions/list", headers=acme)[
            "sessions"]] == [made["session_id"]]
        assert call(c, "sessions/get", {"session_id": made["session_id"]},
                    headers=acme)["status"] == "running"
        # sessions.max_per_tenant is 1 here: acme is at its limit, globex is not.
        over = c.post("/v1/sessions/create", json={"json": {"timeout_seconds": 60}},
                      headers=acme)
        assert over.status_code == 429 and "limit 1" in over.json()["json"]["message"]
        theirs = call(c, "sessions/create", {"timeout_seconds": 60}, headers=globex)
        call(c, "sessions/close", {"session_id": theirs["session_id"]}, headers=globex)
    finally:
        call(c, "sessions/close", {"session_id": made["session_id"]}, headers=acme)


def test_without_auth_everything_is_in_the_default_tenant(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, settings={"secrets_key": "k"}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=15.0) as c:
            dep = deploy(c)
            assert call(c, "deployments/list")["deployments"][0]["id"] == dep["id"]
            assert dep["source_path"] and "/default/" in dep["source_path"]
    finally:
        server.close()


def test_tenancy_and_callbacks_on_postgres(tmp_path: Path, pg_url: str) -> None:
    server = ServerProcess(tmp_path, settings={
        "db": {"url": pg_url}, "auth": {"initial_user": ADMIN}, "secrets_key": "pg-key",
        "callbacks": {"allow_private": True}}).start()
    rx = Receiver()
    try:
        with httpx.Client(base_url=server.url, timeout=15.0) as c:
            keys = _keys(c)
            acme, globex = keys["acme"], keys["globex"]
            deploy(c, headers=acme)
            deploy(c, headers=globex)
            call(c, "credentials/create", {"name": "api_token", "value": "pg-secret-value"},
                 headers=acme)
            job = call(c, "jobs/create", {"workflow": "secretive", "params": {},
                                          "nonce": "pg", "callback_url": rx.url + "/pg",
                                          "callback_secret": "s"}, headers=acme)["job_id"]
            assert call(c, "jobs/create", {"workflow": "secretive", "params": {},
                                           "nonce": "pg"}, headers=acme)["job_id"] == job
            assert wait_job(c, job, headers=acme)["status"] == "completed"
            lines = [e["message"] for e in call(c, "logs/list", {"jobId": job},
                                                headers=acme)["logs"]]
            assert any(x.startswith("token=") for x in lines)
            assert not any("pg-secret-value" in x for x in lines)
            _wait(lambda: len(rx.requests) >= 1)
            assert orjson.loads(rx.requests[0]["body"])["job_id"] == job
            # globex sees none of it
            assert call(c, "jobs/list", headers=globex)["jobs"] == []
            assert call(c, "credentials/list", headers=globex)["credentials"] == []
            assert call(c, "webhooks/deliveries", headers=globex)["deliveries"] == []
            _missing(c, "jobs/get", {"id": job}, globex)
            _missing(c, "credentials/get", {"name": "api_token"}, globex)
            g_job = call(c, "jobs/create", {"workflow": "secretive", "params": {},
                                            "nonce": "pg"}, headers=globex)["job_id"]
            assert g_job != job
            wait_job(c, g_job, headers=globex)
    finally:
        close(rx)
        server.close()
