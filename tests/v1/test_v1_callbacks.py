"""Cloud API over HTTP: job callbacks, tenant webhooks, signatures, retries, redelivery."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import httpx
import orjson
from receiver import Receiver, close
from v1_helpers import call, deploy, wait_job


def _wait(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_job_callback_signed_and_retried_with_stable_id(v1: httpx.Client) -> None:
    deploy(v1)
    rx = Receiver(fail=1)
    try:
        # An endpoint of the tenant must not get a job that has its own callback.
        hook_rx = Receiver()
        hook = call(v1, "webhooks/create", {"url": hook_rx.url + "/tenant",
                                            "description": "t"})
        secret = "cb-secret"
        job_id = call(v1, "jobs/create", {"workflow": "greet", "params": {"name": "cb"},
                                          "nonce": "cb-1", "callback_url": rx.url + "/cb",
                                          "callback_secret": secret})["job_id"]
        wait_job(v1, job_id)
        _wait(lambda: len(rx.requests) >= 2)  # one failure, then the retry
        first, second = rx.requests[0], rx.requests[1]
        body = second["body"]
        payload = orjson.loads(body)
        assert payload["event"] == "job.completed" and payload["job_id"] == job_id
        assert payload["nonce"] == "cb-1" and payload["workflow"] == "greet"
        assert payload["status"] == "completed" and payload["result"]
        assert set(payload) >= {"deployment_id", "error", "mapped_stack"}
        h = second["headers"]
        assert h["x-event-type"] == "job.completed"
        assert h["x-webhook-signature"] == hmac.new(secret.encode(), body,
                                                    hashlib.sha256).hexdigest()
        signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(secret.encode(), signed,
                                             hashlib.sha256).digest()).decode()
        assert h["webhook-signature"] == f"v1,{expected}"
        assert first["headers"]["webhook-id"] == h["webhook-id"]
        time.sleep(0.5)
        assert hook_rx.requests == []
        # The delivery log keeps both attempts.
        log = call(v1, "webhooks/deliveries", {"job_id": job_id})["deliveries"]
        assert len(log) == 1 and log[0]["status"] == "delivered"
        assert [a["status_code"] for a in log[0]["attempts"]] == [500, 200]
        # Redeliver sends it again with the same webhook-id.
        again = call(v1, "webhooks/redeliver", {"id": log[0]["id"]})
        assert again["success"] is True
        assert rx.requests[-1]["headers"]["webhook-id"] == h["webhook-id"]
        call(v1, "webhooks/delete", {"id": hook["webhook"]["id"]})
        close(hook_rx)
    finally:
        close(rx)


def test_tenant_webhooks_get_jobs_without_callback_and_skip_suppresses(
        v1: httpx.Client) -> None:
    deploy(v1)
    rx = Receiver()
    try:
        created = call(v1, "webhooks/create", {"url": rx.url + "/hook"})
        secret = created["signing_secret"]
        assert secret.startswith("whsec_")
        listed = call(v1, "webhooks/list")["webhooks"]
        assert created["webhook"]["id"] in [w["id"] for w in listed]
        assert all("signing_secret" not in w and "secret" not in w for w in listed)
        job_id = call(v1, "jobs/create", {"workflow": "boom", "params": {}})["job_id"]
        wait_job(v1, job_id)
        _wait(lambda: any(orjson.loads(r["body"])["job_id"] == job_id for r in rx.requests))
        got = next(r for r in rx.requests if orjson.loads(r["body"])["job_id"] == job_id)
        payload = orjson.loads(got["body"])
        assert payload["event"] == "job.failed" and payload["mapped_stack"]["step"] == "explode"
        key = base64.b64decode(secret.removeprefix("whsec_"))
        h = got["headers"]
        signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + got["body"]
        assert h["webhook-signature"] == "v1," + base64.b64encode(
            hmac.new(key, signed, hashlib.sha256).digest()).decode()
        # skip_callbacks: nothing is sent.
        skipped = call(v1, "jobs/create", {"workflow": "greet", "params": {"name": "s"},
                                           "skip_callbacks": True})["job_id"]
        wait_job(v1, skipped)
        time.sleep(1.0)
        assert all(orjson.loads(r["body"])["job_id"] != skipped for r in rx.requests)
        # An inactive endpoint gets nothing.
        call(v1, "webhooks/update", {"id": created["webhook"]["id"], "active": False})
        quiet = call(v1, "jobs/create", {"workflow": "greet", "params": {"name": "q"}})["job_id"]
        wait_job(v1, quiet)
        time.sleep(1.0)
        assert all(orjson.loads(r["body"])["job_id"] != quiet for r in rx.requests)
        call(v1, "webhooks/delete", {"id": created["webhook"]["id"]})
    finally:
        close(rx)


def test_redirects_are_not_followed(v1: httpx.Client) -> None:
    deploy(v1)
    rx = Receiver()
    try:
        job_id = call(v1, "jobs/create", {"workflow": "greet", "params": {"name": "r"},
                                          "callback_url": rx.url + "/redirect",
                                          "callback_secret": "s"})["job_id"]
        wait_job(v1, job_id)
        _wait(lambda: len(rx.requests) >= 1)
        time.sleep(0.3)
        assert all(r["path"] == "/redirect" for r in rx.requests)
        log = call(v1, "webhooks/deliveries", {"job_id": job_id})["deliveries"]
        assert log[0]["attempts"][0]["status_code"] == 302
        assert "redirect" in log[0]["attempts"][0]["error"]
    finally:
        close(rx)
