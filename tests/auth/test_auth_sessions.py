"""Login, refresh-token rotation and reuse detection, logout, API keys, users, rate
limits and WebSocket tickets, against a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from auth_helpers import ADMIN, admin_headers, auth_server, bearer, create_user, login, wait_job
from harness import ServerProcess
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = auth_server(tmp_path_factory.mktemp("sessions"),
                       {"rate_limit": {"per_user": 3, "per_ip": 200, "window": "1m"}})
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def admin(client: httpx.Client) -> dict[str, str]:
    return admin_headers(client)


def test_login_and_me(client: httpx.Client) -> None:
    session = login(client, ADMIN["email"].upper(), ADMIN["password"])
    assert session["token_type"] == "Bearer" and session["expires_in"] == 900
    me = client.get("/api/auth/me", headers=bearer(session["access_token"])).json()
    assert me["email"] == ADMIN["email"] and me["is_admin"] and me["via"] == "token"
    assert "password" in me["auth_methods"] and me["last_login_at"]
    bad = client.post("/api/auth/login", json={"email": ADMIN["email"], "password": "nope"})
    assert bad.status_code == 401 and bad.json() == {"error": "invalid email or password"}
    unknown = client.post("/api/auth/login", json={"email": "who@x.y", "password": "whatever1"})
    assert unknown.status_code == 401 and unknown.json() == bad.json()


def test_refresh_rotates_and_reuse_revokes_the_family(client: httpx.Client) -> None:
    first = login(client, ADMIN["email"], ADMIN["password"])
    other = login(client, ADMIN["email"], ADMIN["password"])  # another login family
    r = client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get("/api/auth/me", headers=bearer(second["access_token"])).status_code == 200
    # The old token again: reuse. The whole family dies, the rotated token with it.
    reuse = client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and "reused" in reuse.json()["error"]
    after = client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert after.status_code == 401
    # Another login's family is untouched.
    assert client.post("/api/auth/refresh",
                       json={"refresh_token": other["refresh_token"]}).status_code == 200


def test_logout_revokes_the_refresh_token(client: httpx.Client) -> None:
    session = login(client, ADMIN["email"], ADMIN["password"])
    headers = bearer(session["access_token"])
    r = client.post("/api/auth/logout", headers=headers,
                    json={"refresh_token": session["refresh_token"]})
    assert r.status_code == 200 and r.json()["revoked_tokens"] == 1
    assert client.post("/api/auth/refresh",
                       json={"refresh_token": session["refresh_token"]}).status_code == 401


def test_api_keys_shown_once_listed_and_revoked_at_once(client: httpx.Client,
                                                          admin: dict[str, str]) -> None:
    created = client.post("/api/auth/keys", headers=admin, json={"name": "ci"}).json()
    key, prefix = created["key"], created["prefix"]
    assert key.startswith(f"pk_{prefix}_")
    listed = client.get("/api/auth/keys", headers=admin).json()
    entry = next(k for k in listed if k["prefix"] == prefix)
    assert "key" not in entry and entry["name"] == "ci" and not entry["revoked"]
    for headers in (bearer(key), {"x-api-key": key}):
        me = client.get("/api/auth/me", headers=headers)
        assert me.status_code == 200 and me.json()["via"] == "api_key"
    # An API key cannot mint more keys.
    assert client.post("/api/auth/keys", headers=bearer(key),
                       json={"name": "x"}).status_code == 401
    assert client.delete(f"/api/auth/keys/{prefix}", headers=admin).json()["revoked"]
    assert client.get("/api/auth/me", headers=bearer(key)).status_code == 401
    assert client.get("/api/jobs", headers={"x-api-key": key}).status_code == 401
    # The rest of the key must match too: the right prefix with a wrong secret fails.
    again = client.post("/api/auth/keys", headers=admin, json={"name": "ci2"}).json()
    forged = again["key"][:-3] + "xyz"
    assert client.get("/api/auth/me", headers=bearer(forged)).status_code == 401
    past = client.post("/api/auth/keys", headers=admin,
                       json={"name": "old", "expires_at": "2001-01-01T00:00:00Z"})
    assert past.status_code == 400


def test_users_list_detail_and_administration(client: httpx.Client,
                                              admin: dict[str, str]) -> None:
    user_id = create_user(client, admin, "carol@example.com", ["dev"])
    r = client.get("/api/users", headers=admin, params={"limit": 1, "offset": 0})
    assert r.status_code == 200 and len(r.json()) == 1
    assert int(r.headers["X-Total-Count"]) >= 2
    detail = client.get(f"/api/users/{user_id}", headers=admin).json()
    assert detail["groups"] == ["dev"] and detail["auth_methods"] == ["password"]
    carol = bearer(login(client, "carol@example.com", "user-password-1")["access_token"])
    # Not an admin: no list, no one else's detail, no administration; her own detail is fine.
    assert client.get("/api/users", headers=carol).status_code == 403
    assert client.get(f"/api/users/{user_id}", headers=carol).status_code == 200
    assert client.post("/api/users", headers=carol,
                       json={"email": "eve@example.com"}).status_code == 403
    assert client.patch(f"/api/users/{user_id}", headers=carol,
                        json={"is_admin": True}).status_code == 403
    key = client.post("/api/auth/keys", headers=carol, json={"name": "mine"}).json()
    methods = client.get(f"/api/users/{user_id}", headers=admin).json()["auth_methods"]
    assert methods == ["password", "api_key"]
    # Someone else's key is not hers to revoke; it looks like it does not exist.
    other = client.post("/api/auth/keys", headers=admin, json={"name": "admin's"}).json()
    assert client.delete(f"/api/auth/keys/{other['prefix']}", headers=carol).status_code == 404
    assert client.delete(f"/api/auth/keys/{key['prefix']}", headers=carol).status_code == 200
    # The admin grants admin and changes groups; it applies to her next request.
    r = client.patch(f"/api/users/{user_id}", headers=admin,
                     json={"is_admin": True, "groups": ["ops", "dev", "ops"]})
    assert r.status_code == 200 and r.json()["groups"] == ["ops", "dev"]
    assert client.get("/api/users", headers=carol).status_code == 200
    dup = client.post("/api/users", headers=admin, json={"email": "CAROL@example.com"})
    assert dup.status_code == 409
    short = client.post("/api/users", headers=admin, json={"email": "d@x.y", "password": "1"})
    assert short.status_code == 400


def test_login_is_rate_limited_per_user(client: httpx.Client, admin: dict[str, str]) -> None:
    create_user(client, admin, "victim@example.com", password="victim-password")
    for _ in range(3):
        r = client.post("/api/auth/login",
                        json={"email": "victim@example.com", "password": "guess-guess"})
        assert r.status_code == 401
    # Locked for the window, even with the right password; other users are not.
    r = client.post("/api/auth/login",
                    json={"email": "Victim@example.com", "password": "victim-password"})
    assert r.status_code == 429
    assert login(client, ADMIN["email"], ADMIN["password"])["access_token"]


def test_login_is_rate_limited_per_ip(tmp_path: Path) -> None:
    proc = auth_server(tmp_path, {"rate_limit": {"per_ip": 3, "per_user": 100}},
                       workers={"local": {"concurrency": 1}})
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            for n in range(3):
                r = client.post("/api/auth/login",
                                json={"email": f"u{n}@x.y", "password": "whatever1"})
                assert r.status_code == 401
            r = client.post("/api/auth/login",
                            json={"email": ADMIN["email"], "password": ADMIN["password"]})
            assert r.status_code == 429 and "too many" in r.json()["error"]
    finally:
        proc.close()


def test_ws_ticket_is_single_use(server: ServerProcess, client: httpx.Client,
                                 admin: dict[str, str]) -> None:
    job_id = client.post("/api/workspaces/main/tasks/build/execute", headers=admin,
                         json={}).json()["job_id"]
    wait_job(client, admin, job_id)
    ticket = client.post("/api/auth/ws-ticket", headers=admin).json()["ticket"]
    url = f"{server.ws_url}/api/jobs/{job_id}/logs/stream"
    with connect(f"{url}?ticket={ticket}", open_timeout=5) as ws:
        frames = list(ws)
    assert any("hi" in str(f) for f in frames)
    with pytest.raises(InvalidStatus) as info:
        connect(f"{url}?ticket={ticket}", open_timeout=5)
    assert info.value.response.status_code == 401
    # A bearer header works for WebSockets too; a token in the URL does not.
    with connect(url, additional_headers=admin, open_timeout=5) as ws:
        assert list(ws)
    token = admin["Authorization"].split()[1]
    with pytest.raises(InvalidStatus):
        connect(f"{url}?ticket={token}", open_timeout=5)


def test_keys_and_passwords_are_stored_only_as_hashes(server: ServerProcess,
                                                       client: httpx.Client,
                                                       admin: dict[str, str]) -> None:
    key = client.post("/api/auth/keys", headers=admin, json={"name": "stored"}).json()["key"]
    create_user(client, admin, "hashed@example.com", password="plain-password-42")
    assert client.get("/api/auth/me", headers=bearer(key)).status_code == 200
    # Nothing in the database files (the WAL included) holds either in clear text.
    files = [p for p in server.tmp_dir.iterdir() if p.name.startswith("partitur.db")]
    assert files
    stored = b"".join(p.read_bytes() for p in files)
    secret_part = key.rsplit("_", 1)[1]
    assert secret_part.encode() not in stored
    assert b"plain-password-42" not in stored
    assert b"$argon2id$" in stored
