"""`/hooks/{name}` against a real server: signatures, modes, delivery ids, polling."""

from __future__ import annotations

import base64
import hashlib
import hmac
import textwrap
import time
from collections.abc import Iterator

import httpx
import pytest
from harness import ServerProcess

SECRET = "s3cret-value"

WORKSPACE = """
secrets:
  HOOK: "<< env.PARTITUR_TEST_HOOK_SECRET >>"
tasks:
  deploy:
    input:
      body: { type: object }
      headers: { type: object }
      method: { type: string }
      query: { type: object }
      env: { type: string, default: staging }
    flow:
      run:
        type: shell
        interpreter: sh
        input: { env: "<< input.env >>" }
        script: |
          echo << input.env >>
          echo 'OUTPUT: {"deployed": true}'
  nap:
    flow:
      sleep: { type: shell, interpreter: sh, script: "sleep 3" }
triggers:
  gh:
    type: webhook
    name: github
    task: deploy
    secret: "<< secret.HOOK >>"
    input: { env: "<< body.target | default('staging') >>" }
  sync:
    type: webhook
    task: deploy
    mode: sync
    timeout_secs: 10
  open-query:
    type: webhook
    task: deploy
    secret: plain
    allow_query_secret: true
  off:
    type: webhook
    task: deploy
    enabled: false
  slow-sync:
    type: webhook
    task: nap
    mode: sync
    timeout_secs: 1
"""


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp = tmp_path_factory.mktemp("hooks")
    ws = tmp / "ws"
    (ws / ".workflows").mkdir(parents=True)
    (ws / ".workflows" / "hooks.yaml").write_text(textwrap.dedent(WORKSPACE), "utf-8")
    server = ServerProcess(tmp, workspaces={"hooks": ws},
                           settings={"limits": {"body": 4096}},
                           env={"PARTITUR_TEST_HOOK_SECRET": SECRET})
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=15.0) as c:
            yield c
    finally:
        server.close()


def _hub(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _job(client: httpx.Client, job_id: str) -> dict:  # type: ignore[type-arg]
    r = client.get(f"/hooks/github/jobs/{job_id}", params={"wait": "true", "timeout": "10"},
                   headers={"Authorization": f"Bearer {SECRET}"})
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def test_github_signature_starts_the_task_with_the_request_as_input(client: httpx.Client) -> None:
    body = b'{"target": "prod", "ref": "main"}'
    r = client.post("/hooks/github?x=1", content=body, headers={
        "X-Hub-Signature-256": _hub(body), "Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert _job(client, job_id)["status"] == "completed"
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["source_type"] == "webhook" and job["source_id"] == "hooks/gh"
    assert job["input"]["body"] == {"target": "prod", "ref": "main"}
    assert job["input"]["method"] == "POST" and job["input"]["query"] == {"x": "1"}
    assert job["input"]["env"] == "prod"  # the trigger's templated default saw the body


def test_bad_or_missing_signatures_are_401(client: httpx.Client) -> None:
    body = b"{}"
    assert client.post("/hooks/github", content=body,
                       headers={"X-Hub-Signature-256": _hub(body, "wrong")}).status_code == 401
    assert client.post("/hooks/github", content=body).status_code == 401
    assert client.post("/hooks/github", content=body,
                       headers={"Authorization": "Bearer nope"}).status_code == 401
    # A query secret counts only where the trigger allows it.
    assert client.post(f"/hooks/github?secret={SECRET}", content=body).status_code == 401
    assert client.post("/hooks/open-query?secret=plain", content=body).status_code == 202
    assert client.post("/hooks/open-query?secret=bad", content=body).status_code == 401


def test_standard_webhooks_signature(client: httpx.Client) -> None:
    body, msg_id, stamp = b'{"a": 1}', "msg_1", str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256)
    good = "v1," + base64.b64encode(digest.digest()).decode()
    headers = {"webhook-id": msg_id, "webhook-timestamp": stamp}
    r = client.post("/hooks/github", content=body,
                    headers={**headers, "webhook-signature": f"v1,AAAA {good}"})
    assert r.status_code == 202
    # The same delivery id again returns the first job.
    again = client.post("/hooks/github", content=body,
                        headers={**headers, "webhook-signature": good})
    assert again.status_code == 202 and again.json()["job_id"] == r.json()["job_id"]
    old = {"webhook-id": "m2", "webhook-timestamp": str(int(time.time()) - 3600),
           "webhook-signature": good}
    assert client.post("/hooks/github", content=body, headers=old).status_code == 401


def test_repeated_github_delivery_returns_the_first_job(client: httpx.Client) -> None:
    body = b"{}"
    headers = {"X-Hub-Signature-256": _hub(body), "X-GitHub-Delivery": "d-123"}
    first = client.post("/hooks/github", content=body, headers=headers).json()["job_id"]
    second = client.post("/hooks/github", content=body, headers=headers).json()["job_id"]
    assert first == second


def test_sync_mode_answers_with_the_output(client: httpx.Client) -> None:
    r = client.get("/hooks/sync", params={"a": "b"})
    assert r.status_code == 200
    data = r.json()
    assert data["status"] == "completed" and data["output"] == {"run": {"deployed": True}}


def test_sync_mode_answers_202_with_the_job_when_the_wait_runs_out(
        client: httpx.Client) -> None:
    r = client.post("/hooks/slow-sync", content=b"{}")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] in ("pending", "running") and "output" not in body
    polled = client.get(f"/hooks/slow-sync/jobs/{body['job_id']}",
                        params={"wait": "true", "timeout": "30"})
    assert polled.status_code == 200 and polled.json()["status"] == "completed"


def test_bearer_secret_idempotency_key_and_headers_in_the_input(client: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {SECRET}", "Idempotency-Key": "idem-1",
               "X-Custom": "yes"}
    first = client.post("/hooks/github", content=b"{}", headers=headers)
    assert first.status_code == 202, first.text
    job_id = first.json()["job_id"]
    again = client.post("/hooks/github", content=b"{}", headers=headers)
    assert again.status_code == 202 and again.json()["job_id"] == job_id
    other = client.post("/hooks/github", content=b"{}",
                        headers={**headers, "Idempotency-Key": "idem-2"})
    assert other.status_code == 202 and other.json()["job_id"] != job_id
    assert _job(client, job_id)["status"] == "completed"
    seen = client.get(f"/api/jobs/{job_id}").json()["input"]["headers"]
    assert seen["x-custom"] == "yes" and seen["idempotency-key"] == "idem-1"
    assert "authorization" not in seen  # credentials never reach the job


def test_unknown_and_disabled_hooks_are_404_and_big_bodies_413(client: httpx.Client) -> None:
    assert client.post("/hooks/nope", content=b"{}").status_code == 404
    assert client.post("/hooks/off", content=b"{}").status_code == 404
    assert client.post("/hooks/sync", content=b"x" * 10_000).status_code == 413


def test_polling_is_limited_to_the_hooks_own_jobs(client: httpx.Client) -> None:
    job_id = client.get("/hooks/sync").json()["job_id"]
    r = client.get(f"/hooks/github/jobs/{job_id}", headers={"Authorization": f"Bearer {SECRET}"})
    assert r.status_code == 404
    assert client.get(f"/hooks/sync/jobs/{job_id}").json()["status"] == "completed"
    assert client.get(f"/hooks/github/jobs/{job_id}").status_code == 401
