"""Callback delivery: the address policy, the `job.cancelled` event, schedules' own
callbacks (over HTTP), and the retry schedule — exponential backoff with bounded jitter,
ending after `retry_for` or `max_attempts` — driven by a fake clock in-process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness import ServerProcess, free_port
from receiver import Receiver, close
from v1_helpers import call, deploy, wait_job, workspace

from engine.callbacks import JOB_END, CallbackPolicy, Callbacks
from engine.cloud import Cloud, CloudOptions
from engine.cloudjobs import JobRequest
from engine.runtime import Runtime, RuntimeOptions
from engine.testing import FakeClock


def _wait(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _job_ids(rx: Receiver) -> list[str]:
    return [orjson.loads(r["body"])["job_id"] for r in list(rx.requests)]


# --- over HTTP ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server with the default address policy (`callbacks.allow_private` unset)."""
    server = ServerProcess(tmp_path_factory.mktemp("strict"),
                           settings={"secrets_key": "strict-key"}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=15.0) as client:
            yield client
    finally:
        server.close()


def test_private_and_loopback_addresses_are_refused_by_default(strict: httpx.Client) -> None:
    deploy(strict)
    rx = Receiver()
    try:
        hooks = [call(strict, "webhooks/create", {"url": url})["webhook"]["id"]
                 for url in ("http://10.1.2.3:9/private", "http://169.254.169.254/meta",
                             rx.url + "/loopback")]
        job_id = call(strict, "jobs/create", {"workflow": "greet",
                                              "params": {"name": "x"}})["job_id"]
        wait_job(strict, job_id)

        def attempted() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = call(strict, "webhooks/deliveries",
                                               {"job_id": job_id})["deliveries"]
            return found if len(found) == 3 and all(d["attempts"] for d in found) else []

        _wait(lambda: bool(attempted()))
        for delivery in attempted():
            first = delivery["attempts"][0]
            assert first["status_code"] is None
            assert first["error"].startswith("refused:") and "non-public" in first["error"]
            assert delivery["status"] in ("pending", "failed")
        assert sorted(d["webhook_id"] for d in attempted()) == sorted(hooks)
        assert rx.requests == []  # the loopback receiver was never called
        # A job's own callback to a loopback address is refused the same way.
        own = call(strict, "jobs/create", {"workflow": "greet", "params": {"name": "y"},
                                           "callback_url": rx.url + "/own",
                                           "callback_secret": "s"})["job_id"]
        wait_job(strict, own)
        _wait(lambda: any(d["attempts"] for d in call(
            strict, "webhooks/deliveries", {"job_id": own})["deliveries"]))
        log = call(strict, "webhooks/deliveries", {"job_id": own})["deliveries"]
        assert len(log) == 1 and log[0]["attempts"][0]["error"].startswith("refused:")
        assert rx.requests == []
    finally:
        close(rx)


def test_cancelled_jobs_send_job_cancelled(v1: httpx.Client) -> None:
    deploy(v1)
    rx = Receiver()
    try:
        job_id = call(v1, "jobs/create", {"workflow": "slow", "params": {},
                                          "callback_url": rx.url + "/c",
                                          "callback_secret": "s"})["job_id"]
        wait_job(v1, job_id, until={"running"})
        assert call(v1, "jobs/cancel", {"id": job_id})["success"] is True
        wait_job(v1, job_id)
        _wait(lambda: job_id in _job_ids(rx))
        got = rx.requests[0]
        payload = orjson.loads(got["body"])
        assert got["headers"]["x-event-type"] == "job.cancelled"
        assert payload["event"] == "job.cancelled" and payload["status"] == "cancelled"
        assert payload["result"] is None and payload["error"]
        assert set(payload) == {"event", "job_id", "nonce", "workflow", "deployment_id",
                                "status", "result", "error", "mapped_stack"}
    finally:
        close(rx)


def test_schedules_carry_their_own_callback_and_skip_callbacks(v1: httpx.Client) -> None:
    deploy(v1)
    own, tenant = Receiver(), Receiver()
    hook = call(v1, "webhooks/create", {"url": tenant.url + "/tenant"})["webhook"]["id"]
    schedules: list[str] = []
    try:
        # A schedule with its own callback: its jobs go there only.
        with_cb = call(v1, "schedules/create", {
            "workflow": "greet", "params": {"name": "sched"}, "cron_expr": "* * * * * *",
            "callback_url": own.url + "/own", "callback_secret": "sched-secret"})["schedule"]
        schedules.append(with_cb["id"])
        _wait(lambda: len(own.requests) >= 1, timeout=30)
        call(v1, "schedules/update", {"id": with_cb["id"], "enabled": False})
        sched_jobs = set(_job_ids(own))
        # A schedule with skip_callbacks: its jobs reach nobody.
        skipping = call(v1, "schedules/create", {
            "workflow": "greet", "params": {"name": "quiet"}, "cron_expr": "* * * * * *",
            "skip_callbacks": True})["schedule"]
        schedules.append(skipping["id"])

        def quiet_job() -> str | None:
            s = call(v1, "schedules/get", {"id": skipping["id"]})["schedule"]
            return s["last_job_id"]  # type: ignore[no-any-return]

        _wait(lambda: quiet_job() is not None, timeout=30)
        call(v1, "schedules/update", {"id": skipping["id"], "enabled": False})
        quiet = quiet_job()
        assert quiet is not None
        wait_job(v1, quiet)
        # A later job without a callback reaches the tenant endpoint; by then the ends of
        # the scheduled jobs were handled.
        marker = call(v1, "jobs/create", {"workflow": "greet",
                                          "params": {"name": "m"}})["job_id"]
        wait_job(v1, marker)
        _wait(lambda: marker in _job_ids(tenant))
        assert sched_jobs and not set(_job_ids(own)) & set(_job_ids(tenant))
        assert quiet not in _job_ids(tenant) and quiet not in _job_ids(own)
        assert call(v1, "webhooks/deliveries", {"job_id": quiet})["deliveries"] == []
        payload = orjson.loads(own.requests[0]["body"])
        assert payload["workflow"] == "greet" and payload["event"] == "job.completed"
    finally:
        for sid in schedules:
            call(v1, "schedules/delete", {"id": sid})
        call(v1, "webhooks/delete", {"id": hook})
        close(own)
        close(tenant)


def test_pending_deliveries_survive_a_restart(tmp_path: Path) -> None:
    port = free_port()
    server = ServerProcess(tmp_path, settings={"secrets_key": "restart-key",
                                               "callbacks": {"allow_private": True}}).start()
    rx: Receiver | None = None
    try:
        with httpx.Client(base_url=server.url, timeout=15.0) as c:
            deploy(c)
            job_id = call(c, "jobs/create", {"workflow": "greet", "params": {"name": "r"},
                                             "callback_url": f"http://127.0.0.1:{port}/late",
                                             "callback_secret": "s"})["job_id"]
            wait_job(c, job_id)
            # Nobody listens yet: the first attempt fails and the delivery stays pending.
            _wait(lambda: any(d["attempts"] for d in call(
                c, "webhooks/deliveries", {"job_id": job_id})["deliveries"]))
            (pending,) = call(c, "webhooks/deliveries", {"job_id": job_id})["deliveries"]
            assert pending["status"] == "pending" and pending["attempts"][0]["error"]
        server.close()
        rx = Receiver(port=port)
        server.start()
        with httpx.Client(base_url=server.url, timeout=15.0) as c:
            _wait(lambda: len(rx.requests) >= 1, timeout=30)  # type: ignore[union-attr]
            assert rx.requests[0]["headers"]["webhook-id"] == pending["message_id"]
            assert orjson.loads(rx.requests[0]["body"])["job_id"] == job_id
            _wait(lambda: call(c, "webhooks/deliveries", {"job_id": job_id})
                  ["deliveries"][0]["status"] == "delivered")
            (done,) = call(c, "webhooks/deliveries", {"job_id": job_id})["deliveries"]
            assert done["id"] == pending["id"] and len(done["attempts"]) >= 2
    finally:
        server.close()
        if rx is not None:
            close(rx)


def test_secrets_are_encrypted_at_rest(v1: httpx.Client, v1_server: ServerProcess) -> None:
    import sqlite3

    deploy(v1)
    hook = call(v1, "webhooks/create", {"url": "https://example.com/x",
                                        "signing_secret": "plain-hook-secret", "active": False})
    job_id = call(v1, "jobs/create", {"workflow": "greet", "params": {"name": "e"},
                                      "callback_url": "https://example.com/y",
                                      "callback_secret": "plain-callback-secret"})["job_id"]
    sched = call(v1, "schedules/create", {"workflow": "greet", "params": {"name": "e"},
                                          "cron_expr": "0 0 1 1 *", "enabled": False,
                                          "callback_url": "https://example.com/z",
                                          "callback_secret": "plain-schedule-secret"})
    call(v1, "credentials/upsert", {"name": "at_rest", "value": "plain-credential-value"})
    wait_job(v1, job_id)
    db = sqlite3.connect(v1_server.tmp_dir / "partitur.db")
    try:
        rows = [str(r[0]) for r in db.execute("SELECT data FROM cloud_objects")]
    finally:
        db.close()
    assert rows
    for plain in ("plain-hook-secret", "plain-callback-secret", "plain-schedule-secret",
                  "plain-credential-value"):
        assert not any(plain in row for row in rows), plain
    assert "callback_secret" not in sched["schedule"]
    call(v1, "schedules/delete", {"id": sched["schedule"]["id"]})
    call(v1, "webhooks/delete", {"id": hook["webhook"]["id"]})


# --- the retry schedule, in-process with a fake clock ------------------------------------


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[tuple[Cloud, FakeClock]]:
    """A real runtime and cloud (not attached: no deliverer runs on its own)."""
    clock = FakeClock()
    runtime = Runtime(RuntimeOptions(
        db_url=f"sqlite:///{tmp_path / 'p.db'}", logs_dir=tmp_path / "logs",
        artifacts_dir=tmp_path / "artifacts", concurrency=2), clock=clock)
    cloud = Cloud(runtime, CloudOptions(secrets_key="retry-key"))
    await runtime.open()
    try:
        dep = await cloud.deployments.create("default", workspace())
        await cloud.deployments.wait_built(dep.id)
        yield cloud, clock
    finally:
        await cloud.close()
        await runtime.close()


async def _ended_job(cloud: Cloud, url: str) -> str:
    job_id, _ = await cloud.jobs.create("default", JobRequest(
        workflow="greet", params={"name": "r"}, callback_url=url, callback_secret="s"))
    for _ in range(400):
        row = await cloud.jobs.store.get_job(job_id)
        if row is not None and row.status == "completed":
            return job_id
        await asyncio.sleep(0.05)
    raise AssertionError("the job did not complete")


async def test_backoff_doubles_with_bounded_jitter_until_retry_for(
        cloud: tuple[Cloud, FakeClock]) -> None:
    c, clock = cloud
    rx = Receiver(fail=1000)
    jitter = iter([0.0, 0.999, 0.5, 0.25, 0.75, 0.1, 0.9, 0.3, 0.6, 0.2])
    policy = CallbackPolicy(allow_private=True, retry_for=40.0, max_attempts=50,
                            base_delay=1.0, max_delay=8.0)
    callbacks = Callbacks(c.repo, c.jobs, c.cipher, policy, clock=clock,
                          rand=lambda: next(jitter))
    try:
        job_id = await _ended_job(c, rx.url + "/fail")
        (delivery,) = await callbacks.queue_job(job_id)
        assert await callbacks.queue_job(job_id) == []  # queued once
        start = clock.now()
        delays: list[float] = []
        while delivery.data["status"] == "pending":
            delivery = await callbacks.attempt(delivery)
            if delivery.data["status"] == "pending":
                delays.append(delivery.data["next_attempt_at"] - clock.now())
                clock.set(delivery.data["next_attempt_at"])
        # Each delay is the doubled base (capped at max_delay) times 1 + jitter in [0, 1).
        bases = [min(8.0, 2.0 ** n) for n in range(len(delays))]
        assert delays == pytest.approx([b * (1 + j) for b, j in zip(
            bases, [0.0, 0.999, 0.5, 0.25, 0.75, 0.1, 0.9, 0.3, 0.6, 0.2], strict=False)])
        assert all(b <= d < 2 * b for b, d in zip(bases, delays, strict=True))
        # It gives up at the first attempt at or past retry_for after the first attempt.
        assert delivery.data["status"] == "failed"
        attempts = delivery.data["attempts"]
        assert len(attempts) == len(delays) + 1 and clock.now() - start >= 40.0
        assert clock.now() - start - delays[-1] < 40.0
        assert [a["status_code"] for a in attempts] == [500] * len(attempts)
        ids = {r["headers"]["webhook-id"] for r in rx.requests}
        assert len(rx.requests) == len(attempts) and len(ids) == 1
    finally:
        close(rx)


async def test_max_attempts_ends_retries(cloud: tuple[Cloud, FakeClock]) -> None:
    c, clock = cloud
    rx = Receiver(fail=1000)
    policy = CallbackPolicy(allow_private=True, retry_for=3600.0, max_attempts=3)
    callbacks = Callbacks(c.repo, c.jobs, c.cipher, policy, clock=clock)
    try:
        job_id = await _ended_job(c, rx.url + "/fail")
        (delivery,) = await callbacks.queue_job(job_id)
        for _ in range(3):
            assert delivery.data["status"] == "pending"
            delivery = await callbacks.attempt(delivery)
            if delivery.data["status"] == "pending":
                delay = delivery.data["next_attempt_at"] - clock.now()
                n = len(delivery.data["attempts"])
                assert 2 ** (n - 1) <= delay < 2 ** n  # default jitter is bounded too
                clock.set(delivery.data["next_attempt_at"])
        assert delivery.data["status"] == "failed" and len(delivery.data["attempts"]) == 3
        assert len(rx.requests) == 3
        # Nothing is due any more.
        clock.advance(10_000)
        assert await callbacks.deliver_due() == 0 and len(rx.requests) == 3
    finally:
        close(rx)


async def test_a_job_end_writes_its_outbox_row(tmp_path: Path) -> None:
    """Attached, but not leading (no deliverer runs): the end of a cloud job leaves its
    `job_end` row, stamped with the end event; the deliverer turns it into deliveries."""
    runtime = Runtime(RuntimeOptions(
        db_url=f"sqlite:///{tmp_path / 'p.db'}", logs_dir=tmp_path / "logs",
        artifacts_dir=tmp_path / "artifacts", concurrency=2))
    cloud = Cloud(runtime, CloudOptions(secrets_key="outbox-key",
                                        callbacks=CallbackPolicy(allow_private=True)))
    cloud.attach()
    await runtime.open()
    try:
        dep = await cloud.deployments.create("default", workspace())
        await cloud.deployments.wait_built(dep.id)
        job_id, _ = await cloud.jobs.create("default", JobRequest(
            workflow="greet", params={"name": "o"}, callback_url="http://127.0.0.1:9/x",
            callback_secret="s"))
        row = None
        for _ in range(400):
            row = await cloud.jobs.store.get_job(job_id)
            if row is not None and row.status == "completed":
                break
            await asyncio.sleep(0.05)
        assert row is not None and row.status == "completed"
        entry = await cloud.repo.get(JOB_END, job_id)
        assert entry is not None and entry.data["status"] == "completed"
        assert entry.created_at == row.completed_at
        assert await cloud.repo.all("delivery", "default") == []
        assert await cloud.callbacks.queue_ended() == 1
        assert await cloud.repo.get(JOB_END, job_id) is None
        (delivery,) = await cloud.repo.all("delivery", "default")
        assert delivery.data["job_id"] == job_id and delivery.data["status"] == "pending"
        assert await cloud.callbacks.queue_ended() == 0  # once
    finally:
        await cloud.close()
        await runtime.close()


def test_a_vetted_address_is_the_one_connected_to() -> None:
    from engine.callbacks import pinned

    assert pinned("https://hooks.example.com/a?b=1", "93.184.216.34") == (
        "https://93.184.216.34/a?b=1", {"host": "hooks.example.com"},
        {"sni_hostname": "hooks.example.com"})
    assert pinned("http://example.com:8080/x", "2606:2800:220:1::1") == (
        "http://[2606:2800:220:1::1]:8080/x", {"host": "example.com:8080"}, {})
    # A real request over the pinned form reaches the address, naming the original host.
    rx = Receiver()
    try:
        port = rx.server_address[1]
        url, host, extensions = pinned(f"http://localhost:{port}/pinned", "127.0.0.1")
        with httpx.Client() as client:
            r = client.post(url, content=b"{}", headers=host, extensions=extensions)
        assert r.status_code == 200
        assert rx.requests[0]["headers"]["host"] == f"localhost:{port}"
        assert rx.requests[0]["path"] == "/pinned"
    finally:
        close(rx)


async def test_redeliver_sends_once_and_a_failure_is_retried(
        cloud: tuple[Cloud, FakeClock]) -> None:
    from engine.callbacks import OUTBOX

    c, clock = cloud
    rx = Receiver(fail=2)
    callbacks = Callbacks(c.repo, c.jobs, c.cipher,
                          CallbackPolicy(allow_private=True, max_attempts=3), clock=clock)
    try:
        job_id = await _ended_job(c, rx.url + "/r")
        (delivery,) = await callbacks.queue_job(job_id)
        delivery = await callbacks.attempt(delivery)
        assert delivery.data["status"] == "pending" and len(rx.requests) == 1
        assert await c.repo.get(OUTBOX, delivery.id) is not None
        # Redelivered while the receiver still fails: one request, pending, queued for a
        # retry by the deliverer.
        again = await callbacks.redeliver("default", delivery.id)
        assert len(rx.requests) == 2 and again.data["status"] == "pending"
        assert await c.repo.get(OUTBOX, delivery.id) is not None
        # Redelivered once the receiver answers: one request, delivered, out of the queue.
        done = await callbacks.redeliver("default", delivery.id)
        assert done.data["status"] == "delivered" and len(rx.requests) == 3
        assert await c.repo.get(OUTBOX, delivery.id) is None
        clock.advance(3600)
        assert await callbacks.deliver_due() == 0 and len(rx.requests) == 3
        ids = {r["headers"]["webhook-id"] for r in rx.requests}
        assert len(ids) == 1
    finally:
        close(rx)
