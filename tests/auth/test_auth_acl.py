"""The ACL matrix against a real server: task visibility (404), run vs view (403),
filtered job lists, and who did what in the job's audit trail."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from auth_helpers import ADMIN, admin_headers, auth_server, bearer, create_user, login, wait_job
from harness import ServerProcess

RULES = [
    {"tasks": ["ci/*"], "action": "run", "groups": ["dev"]},
    {"tasks": ["ci/build"], "action": "deny", "groups": ["dev"]},  # lower: run still wins
    {"workspace": "main", "tasks": ["ops/deploy"], "action": "view", "groups": ["dev"]},
    {"workspace": "other", "tasks": ["*"], "action": "run", "groups": ["dev"]},
    {"tasks": ["*"], "action": "run", "groups": ["ops"]},
    {"tasks": ["ci/build"], "action": "view", "users": ["plain@example.com"]},
]
TASKS = ("build", "gated", "deploy", "secret")
# user → task → expected level
MATRIX = {
    "dev@example.com": {"build": "run", "gated": "run", "deploy": "view", "secret": "deny"},
    "ops@example.com": {"build": "run", "gated": "run", "deploy": "run", "secret": "run"},
    "plain@example.com": {"build": "view", "gated": "deny", "deploy": "deny", "secret": "deny"},
    ADMIN["email"]: {"build": "run", "gated": "run", "deploy": "run", "secret": "run"},
}
GROUPS = {"dev@example.com": ["dev"], "ops@example.com": ["ops"], "plain@example.com": []}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = auth_server(tmp_path_factory.mktemp("acl"), acl={"rules": RULES})
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def heads(client: httpx.Client) -> dict[str, dict[str, str]]:
    admin = admin_headers(client)
    result = {ADMIN["email"]: admin}
    for email, groups in GROUPS.items():
        create_user(client, admin, email, groups)
        result[email] = bearer(login(client, email, "user-password-1")["access_token"])
    return result


@pytest.fixture(scope="module")
def jobs(client: httpx.Client, heads: dict[str, dict[str, str]]) -> dict[str, str]:
    """One finished job of each task, run by the admin (the gated one waits)."""
    admin = heads[ADMIN["email"]]
    ids = {}
    for task in TASKS:
        r = client.post(f"/api/workspaces/main/tasks/{task}/execute", headers=admin, json={})
        ids[task] = r.json()["job_id"]
    for task, job_id in ids.items():
        wait_job(client, admin, job_id, step="ask" if task == "gated" else None)
    return ids


@pytest.mark.parametrize("email", list(MATRIX))
def test_task_matrix(client: httpx.Client, heads: dict[str, dict[str, str]],
                     email: str) -> None:
    h = heads[email]
    listed = {t["name"] for t in client.get("/api/workspaces/main/tasks", headers=h).json()}
    assert listed == {t for t, level in MATRIX[email].items() if level != "deny"}
    for task, level in MATRIX[email].items():
        detail = client.get(f"/api/workspaces/main/tasks/{task}", headers=h).status_code
        run = client.post(f"/api/workspaces/main/tasks/{task}/execute", headers=h,
                          json={}).status_code
        assert (detail, run) == {"run": (200, 200), "view": (200, 403),
                                 "deny": (404, 404)}[level], (email, task)


@pytest.mark.parametrize("email", list(MATRIX))
def test_job_visibility(client: httpx.Client, heads: dict[str, dict[str, str]],
                        jobs: dict[str, str], email: str) -> None:
    h = heads[email]
    r = client.get("/api/jobs", headers=h, params={"limit": 1000})
    seen = {j["task_name"] for j in r.json()}
    visible = {t for t, level in MATRIX[email].items() if level != "deny"}
    assert seen == visible and int(r.headers["X-Total-Count"]) == len(r.json())
    page = client.get("/api/jobs", headers=h, params={"limit": 1, "offset": 0})
    assert len(page.json()) == 1 and page.headers["X-Total-Count"] == r.headers["X-Total-Count"]
    for task, job_id in jobs.items():
        level = MATRIX[email][task]
        for path in ("", "/events", "/logs", "/artifacts"):
            status = client.get(f"/api/jobs/{job_id}{path}", headers=h).status_code
            assert status == (404 if level == "deny" else 200), (email, task, path)
        if level == "view":
            assert client.post(f"/api/jobs/{job_id}/rerun", headers=h,
                               json={}).status_code == 403
            assert client.post(f"/api/jobs/{job_id}/cancel", headers=h,
                               json={}).status_code in (403,)


def test_audit_names_who_did_what(client: httpx.Client,
                                  heads: dict[str, dict[str, str]]) -> None:
    dev, admin = heads["dev@example.com"], heads[ADMIN["email"]]
    job_id = client.post("/api/workspaces/main/tasks/gated/execute", headers=dev,
                         json={}).json()["job_id"]
    wait_job(client, dev, job_id, step="ask")
    r = client.post(f"/api/jobs/{job_id}/steps/ask/approve", headers=dev,
                    json={"approved": True})
    assert r.status_code == 200
    detail = wait_job(client, dev, job_id)
    assert detail["created_by"] == "dev@example.com"
    assert [(a["action"], a["by"]) for a in detail["audit"]] == [
        ("executed", "dev@example.com"), ("approved", "dev@example.com")]
    rerun = client.post(f"/api/jobs/{job_id}/rerun", headers=admin, json={}).json()["job_id"]
    wait_job(client, admin, rerun, step="ask")
    assert client.post(f"/api/jobs/{rerun}/cancel", headers=dev, json={}).status_code == 200
    final = wait_job(client, admin, rerun)
    actions = [(a["action"], a["by"]) for a in final["audit"]]
    assert actions[:2] == [("reran", ADMIN["email"]), ("cancelled", "dev@example.com")]
    events = client.get(f"/api/jobs/{rerun}/events", headers=admin).json()
    assert any(e["type"] == "JobCancelRequested" and e["data"]["by"] == "dev@example.com"
               for e in events)
