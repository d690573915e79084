"""Every route of the app refuses a missing, a wrong and an expired credential with 401.

The routes come from `server.app.endpoints()`, so a route added later is checked too;
the only exceptions are the documented public ones.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from auth_helpers import ADMIN, auth_server, bearer, login
from harness import ServerProcess
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from server.app import endpoints
from server.auth import PUBLIC_ROUTES

# Public by design: health checks, login/refresh, inbound webhooks (HMAC-signed).
EXEMPT_PREFIXES = ("/hooks/",)
# Protected, but a refusal is answered 204 instead of 401: cloud clients send this
# keyless, and it records nothing (server/v1/envelope.py).
KEYLESS_NO_CONTENT = {("POST", "/v1/telemetry/recordCliEvent")}
TTL = 2.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = auth_server(tmp_path_factory.mktemp("every"), {"access_ttl": f"{TTL}s"},
                       workers={"token": "worker-secret", "local": {"concurrency": 1}})
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture(scope="module")
def credentials(server: ServerProcess) -> dict[str, dict[str, str]]:
    """Bad credentials of every kind; the expired ones were valid a moment ago."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        session = login(client, ADMIN["email"], ADMIN["password"])
        token = session["access_token"]
        soon = (datetime.now(UTC) + timedelta(seconds=TTL)).isoformat()
        key = client.post("/api/auth/keys", headers=bearer(token),
                          json={"name": "short", "expires_at": soon}).json()["key"]
        revoked = client.post("/api/auth/keys", headers=bearer(token),
                              json={"name": "revoked"}).json()
        assert client.get("/api/auth/me", headers=bearer(key)).status_code == 200
        assert client.delete(f"/api/auth/keys/{revoked['prefix']}",
                             headers=bearer(token)).status_code == 200
        time.sleep(TTL + 0.2)
        assert client.get("/api/auth/me", headers=bearer(token)).status_code == 401
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    return {
        "missing": {},
        "wrong bearer": bearer("pat.e30.c2lnbmF0dXJl"),
        "forged signature": bearer(forged),
        "wrong api key": {"x-api-key": "pk_000000000000_nope"},
        "wrong scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "expired token": bearer(token),
        "expired api key": {"x-api-key": key},
        "revoked api key": bearer(revoked["key"]),
    }


def _url(path: str) -> str:
    return re.sub(r"{(\w+)(?::\w+)?}", "x", path)


def _protected() -> list[tuple[str, str]]:
    routes = []
    for ep in endpoints():
        if (ep.method, ep.path) in PUBLIC_ROUTES or ep.path.startswith(EXEMPT_PREFIXES):
            continue
        routes.append((ep.method, ep.path))
    return routes


def test_the_exemptions_are_few_and_known() -> None:
    public = {(ep.method, ep.path) for ep in endpoints()} - set(_protected())
    assert {p for p in public if not p[1].startswith(EXEMPT_PREFIXES)} == {
        ("GET", "/healthz"), ("GET", "/readyz"),
        ("POST", "/api/auth/login"), ("POST", "/api/auth/refresh")}
    assert len(_protected()) > 20


def test_every_route_refuses_bad_credentials(server: ServerProcess,
                                             credentials: dict[str, dict[str, str]]) -> None:
    refused: list[str] = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for method, path in _protected():
            for what, headers in credentials.items():
                if method == "WEBSOCKET":
                    url = server.ws_url + _url(path)
                    with pytest.raises(InvalidStatus) as info:
                        connect(url, additional_headers=headers, open_timeout=5).close()
                    status = info.value.response.status_code
                else:
                    status = client.request(method, _url(path), headers=headers,
                                            json={} if method != "GET" else None).status_code
                expected = 204 if (method, path) in KEYLESS_NO_CONTENT else 401
                if status != expected:
                    refused.append(f"{method} {path} with {what}: {status}")
    assert refused == []


def test_public_routes_answer_without_credentials(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.post("/api/auth/login", json={}).status_code == 400
        assert client.post("/api/auth/refresh", json={"refresh_token": "x"}).status_code == 401
        # /metrics is protected by default once auth is on.
        assert client.get("/metrics").status_code == 401
        assert client.get("/openapi.json").status_code == 401


def test_worker_routes_take_only_the_worker_token(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        token = login(client, ADMIN["email"], ADMIN["password"])["access_token"]
        assert client.get("/api/auth/me", headers=bearer(token)).status_code == 200
        for path in ("/worker/claim", "/worker"):
            assert client.post(path, headers=bearer(token)).status_code == 401
            assert client.post(path).status_code == 401
            # The worker token gets past authentication (no such route yet: 404).
            assert client.post(path, headers=bearer("worker-secret")).status_code != 401


def test_openapi_documents_401(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        token = login(client, ADMIN["email"], ADMIN["password"])["access_token"]
        doc = client.get("/openapi.json", headers=bearer(token)).json()
    assert "401" in doc["paths"]["/api/jobs"]["get"]["responses"]
    assert "429" in doc["paths"]["/api/auth/login"]["post"]["responses"]
    assert "401" not in doc["paths"]["/healthz"]["get"]["responses"]


def test_metrics_public_opens_metrics_and_nothing_else(tmp_path: Path) -> None:
    proc = auth_server(tmp_path, metrics={"public": True}, workers={"local": {"concurrency": 1}})
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            r = client.get("/metrics")
            assert r.status_code == 200 and "partitur_http_requests_total" in r.text
            assert client.get("/api/jobs").status_code == 401
            assert client.get("/openapi.json").status_code == 401
    finally:
        proc.close()
