"""Helpers of the auth tests: servers with an `auth` section, logins, polling."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from harness import ServerProcess

WORKSPACE = Path(__file__).resolve().parents[1] / "fixtures" / "auth_ws"
ADMIN = {"email": "admin@example.com", "password": "admin-password-1", "name": "Admin"}
TERMINAL = {"completed", "failed", "cancelled", "skipped"}


def auth_server(tmp: Path, auth: dict[str, Any] | None = None,
                **settings: Any) -> ServerProcess:
    """A started server serving the auth fixture workspace, with `auth` configured."""
    config = {"auth": {"initial_user": ADMIN, **(auth or {})}, **settings}
    return ServerProcess(tmp, workspaces={"main": WORKSPACE}, settings=config).start()


def login(client: httpx.Client, email: str, password: str) -> dict[str, Any]:
    r = client.post("/api/auth/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_headers(client: httpx.Client) -> dict[str, str]:
    return bearer(login(client, ADMIN["email"], ADMIN["password"])["access_token"])


def create_user(client: httpx.Client, admin: dict[str, str], email: str,
                groups: list[str] | None = None, password: str = "user-password-1") -> str:
    r = client.post("/api/users", headers=admin,
                    json={"email": email, "password": password, "groups": groups or []})
    assert r.status_code == 200, r.text
    user_id: str = r.json()["user_id"]
    return user_id


def wait_job(client: httpx.Client, headers: dict[str, str], job_id: str, *,
             until: set[str] | None = None, step: str | None = None,
             timeout: float = 20.0) -> dict[str, Any]:
    """Poll the job until its status is in `until` (or `step` is suspended)."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if step is not None and any(s["step_name"] == step and s["status"] == "suspended"
                                    for s in job.get("steps", [])):
            return job
        if step is None and job.get("status") in (until or TERMINAL):
            return job
        assert time.monotonic() < deadline, f"job {job_id}: {job}"
        time.sleep(0.05)
