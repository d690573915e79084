"""Signed outgoing webhooks of the cloud API: job callbacks and tenant webhook endpoints.

When a cloud job ends (`job.completed`, `job.failed`, `job.cancelled`), a `job_end` row is
written in the same transaction as its end event (`outbox_for`, an outbox source of the
orchestrator: DESIGN §4). The deliverer turns it into deliveries: to the job's own
callback only, when it has one; otherwise to every active webhook endpoint of the
tenant; to none with `skip_callbacks`. As a safety net, every cloud job's record says
`callbacks: pending` until its deliveries are queued, and the deliverer queues those of
ended jobs when it starts (queueing is idempotent per job and target).

The deliverer runs on the leader only (`lead`/`unlead`, under `engine.leader`), so
several servers on one database never send a delivery twice.

A delivery is a POST of the JSON payload with `x-event-type`, `x-webhook-signature`
(hex HMAC-SHA256 of the body) and the Standard Webhooks headers `webhook-id` (the same on
every retry), `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC of
id.timestamp.body>`; a `whsec_` secret is base64-decoded first). Attempts are retried with
exponential backoff and jitter for a bounded time, redirects are never followed, private
and loopback addresses are refused unless allowed, and every attempt is kept in the
delivery's log (`webhooks/deliveries`, re-sent by `webhooks/redeliver`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import random
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from engine.clock import Clock, SystemClock, new_job_id
from engine.cloudjobs import JOB, CloudJobs
from engine.core import events as ev
from engine.core.state import JobState
from engine.credentials import Cipher
from engine.errors import Conflict, Issue, NotFound, PartiturError, ValidationFailed
from engine.store.base import Outbox, OutboxObject
from engine.store.cloud import CloudObject, CloudRepository
from engine.views import iso

log = logging.getLogger("partitur.callbacks")

WEBHOOK = "webhook"
DELIVERY = "delivery"
OUTBOX = "outbox"
JOB_END = "job_end"  # id: the job; written with its end event, no tenant (the record has it)
_ENDS = (ev.JobCompleted, ev.JobFailed, ev.JobCancelled, ev.JobSkipped)
EVENTS = {"completed": "job.completed", "failed": "job.failed", "cancelled": "job.cancelled",
          "skipped": "job.cancelled"}


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """`callbacks` settings: address policy, retry window, attempt timeout."""

    allow_private: bool = False
    retry_for: float = 3600.0
    max_attempts: int = 12
    base_delay: float = 1.0
    max_delay: float = 300.0
    timeout: float = 10.0


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def signature_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Both signatures: the cloud API's hex HMAC and the Standard Webhooks one."""
    hex_sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    key = secret.encode()
    if secret.startswith("whsec_"):
        with contextlib.suppress(ValueError):
            key = base64.b64decode(secret[len("whsec_"):], validate=True)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    std = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"x-webhook-signature": hex_sig, "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{std}"}


def check_url(url: Any, field: str = "url") -> str:
    """An http(s) URL, or a 400 naming `field`."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(issues=[Issue(message=f"'{field}' must be an http(s) URL",
                                             path=field)])
    return str(url)


async def public_address(url: str) -> tuple[str | None, str | None]:
    """`(address, None)`: a public address of `url`'s host to connect to; or `(None, why
    not)` when the host does not resolve, or resolves to any private, loopback or
    otherwise internal address."""
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        return None, f"cannot resolve {host}: {exc}"
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if not address.is_global or address.is_multicast:
            return None, f"{host} resolves to the non-public address {address}"
    if not addresses:
        return None, f"cannot resolve {host}"
    return str(addresses[0]), None


async def refuse_private(url: str) -> str | None:
    """Why `url` may not be called (a private, loopback or otherwise internal address)."""
    return (await public_address(url))[1]


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """`url` sent to the vetted `address`: the URL with the address as its host, the
    `host` header, and the TLS server name (SNI and certificate check) of the original
    host. So a name that resolves differently a moment later (DNS rebinding) cannot
    redirect the request to an address that was not checked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parts.port}" if parts.port is not None else "")
    shown = (f"[{host}]" if ":" in host else host) + (
        f":{parts.port}" if parts.port is not None else "")
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), {"host": shown}, extensions


class Callbacks:
    """Queues and delivers callbacks; `start()` runs the delivery loop."""

    def __init__(self, repo: CloudRepository, jobs: CloudJobs, cipher: Cipher,
                 policy: CallbackPolicy, *, clock: Clock | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.repo = repo
        self.jobs = jobs
        self.cipher = cipher
        self.policy = policy
        self.clock: Clock = clock or SystemClock()
        self.rand = rand
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # --- queueing --------------------------------------------------------------------

    def outbox_for(self, state: JobState, events: Sequence[ev.Event]) -> Outbox | None:
        """`Orchestrator.add_outbox`: the `job_end` row of a cloud job that these events
        end, written in the same transaction as its end event."""
        if state.source_type != "cloud" or not state.terminal:
            return None
        end = next((e for e in events if isinstance(e, _ENDS)), None)
        if end is None:
            return None
        return Outbox(objects=[OutboxObject(JOB_END, state.job_id, "", end.ts,
                                            {"status": state.status.value})])

    def listener(self, state: JobState, events: Sequence[ev.Event]) -> None:
        """`Orchestrator.on_events`: a cloud job ended, deliver without waiting."""
        if state.source_type == "cloud" and state.terminal and any(
                isinstance(e, _ENDS) for e in events):
            self._wake.set()

    async def catch_up(self) -> int:
        """Queue the deliveries of cloud jobs that ended while nobody queued them."""
        count = 0
        for obj in await self.repo.all(JOB, None):
            if obj.data.get("callbacks") == "pending":
                row = await self.jobs.store.get_job(obj.id)
                if row is not None and row.status in EVENTS:
                    try:
                        await self.queue_job(obj.id)
                    except Exception:
                        log.exception("job %s: cannot queue its callbacks", obj.id)
                        continue
                    count += 1
        return count

    async def queue_ended(self) -> int:
        """Turn every `job_end` row into deliveries; how many rows were done."""
        done = 0
        for entry in await self.repo.all(JOB_END, None):
            try:
                await self.queue_job(entry.id)
            except Exception:
                log.exception("job %s: cannot queue its callbacks", entry.id)
                continue
            await self.repo.delete(JOB_END, entry.id)
            done += 1
        return done

    async def queue_job(self, job_id: str) -> list[CloudObject]:
        """Queue the deliveries of an ended cloud job (once; later calls queue nothing)."""
        obj = await self.repo.get(JOB, job_id)
        if obj is None or obj.data.get("callbacks") != "pending":
            return []
        row = await self.jobs.store.get_job(job_id)
        if row is None or row.status not in EVENTS:
            return []
        targets: list[tuple[str, str, str | None]] = []  # url, encrypted secret, endpoint
        if not obj.data.get("skip_callbacks"):
            if obj.data.get("callback_url"):
                targets.append((obj.data["callback_url"], obj.data["callback_secret"], None))
            else:
                for hook in await self.repo.all(WEBHOOK, obj.tenant):
                    if hook.data.get("active", True):
                        targets.append((hook.data["url"], hook.data["secret"], hook.id))
        detail = await self.jobs.detail(obj, row)
        event = EVENTS[row.status]
        payload = {"event": event, "job_id": job_id, "nonce": obj.data.get("nonce"),
                   "workflow": obj.data["workflow"],
                   "deployment_id": obj.data["deployment_id"],
                   "status": detail["status"], "result": detail["result"],
                   "error": detail["error"], "mapped_stack": detail["mapped_stack"]}
        body = orjson.dumps(payload).decode()
        queued: list[CloudObject] = []
        now = self.clock.now()
        for url, secret, endpoint in targets:
            name = f"{job_id}\n{endpoint or 'callback'}"
            delivery = CloudObject(DELIVERY, new_job_id(), obj.tenant, now, now, {
                "msg_id": f"msg_{new_job_id().replace('-', '')}", "job_id": job_id,
                "event": event, "url": url, "secret": secret, "webhook_id": endpoint,
                "body": body, "status": "pending", "attempts": [],
                "next_attempt_at": now, "first_attempt_at": None}, name=name)
            try:
                await self.repo.insert(delivery)
            except Conflict:
                # Queued before, by a pass that stopped before it was done.
                found = await self.repo.by_name(DELIVERY, obj.tenant, name)
                if found is None or found.data["status"] != "pending":
                    continue
                delivery = found
            with contextlib.suppress(Conflict):
                await self.repo.insert(CloudObject(OUTBOX, delivery.id, obj.tenant, now, now))
            queued.append(delivery)
        await self.repo.merge(obj, now, callbacks="queued")
        self._wake.set()
        return queued

    # --- delivering ------------------------------------------------------------------

    async def lead(self) -> None:
        """This server became the leader: deliver (`Runtime.on_lead`)."""
        self.start()

    async def unlead(self) -> None:
        """This server no longer leads: stop delivering (`Runtime.on_unlead`)."""
        await self.stop()

    def start(self) -> None:
        """Run the deliverer: catch up on missed jobs, then deliver what is due."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        try:
            count = await self.catch_up()
            if count:
                log.info("queued the callbacks of %d jobs that ended unqueued", count)
        except Exception:
            log.exception("callback catch-up failed")
        while True:
            try:
                await self.queue_ended()
                await self.deliver_due()
            except Exception:
                log.exception("callback delivery pass failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)

    async def deliver_due(self) -> int:
        """Attempt every delivery that is due; how many were attempted."""
        now = self.clock.now()
        attempted = 0
        for entry in await self.repo.all(OUTBOX, None):
            delivery = await self.repo.get(DELIVERY, entry.id)
            if delivery is None or delivery.data["status"] != "pending":
                await self.repo.delete(OUTBOX, entry.id)
                continue
            if delivery.data["next_attempt_at"] > now:
                continue
            await self.attempt(delivery)
            attempted += 1
        return attempted

    async def attempt(self, delivery: CloudObject) -> CloudObject:
        """One attempt: POST, record it, schedule the next one or finish."""
        data = delivery.data
        secret = self.cipher.decrypt(data["secret"])
        body = data["body"].encode()
        stamp = int(self.clock.now())
        headers = {"content-type": "application/json", "x-event-type": data["event"],
                   "user-agent": "Partitur-Webhooks/1",
                   **signature_headers(secret, data["msg_id"], stamp, body)}
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        target: str = data["url"]
        extensions: dict[str, Any] = {}
        refused = None
        if not self.policy.allow_private:
            address, refused = await public_address(data["url"])
            if address is not None:
                target, host, extensions = pinned(data["url"], address)
                headers.update(host)
        if refused is not None:
            error = f"refused: {refused}"
        else:
            import httpx  # on the first delivery, not at every start

            try:
                async with httpx.AsyncClient(follow_redirects=False,
                                             timeout=self.policy.timeout) as client:
                    response = await client.post(target, content=body, headers=headers,
                                                 extensions=extensions)
                status_code = response.status_code
                if not 200 <= status_code < 300:
                    error = f"HTTP {status_code}" + (
                        " (redirects are not followed)" if 300 <= status_code < 400 else "")
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        now = self.clock.now()
        latency = round((time.monotonic() - started) * 1000, 1)
        jitter = 1 + self.rand()

        def record(current: CloudObject) -> CloudObject:
            # Over the stored delivery: an attempt another server recorded meanwhile stays.
            done = current.data["attempts"]
            attempts = [*done, {"attempt": len(done) + 1, "at": iso(now),
                                "status_code": status_code, "latency_ms": latency,
                                "error": error}]
            first = current.data["first_attempt_at"] or now
            fields: dict[str, Any] = {"attempts": attempts, "first_attempt_at": first}
            if error is None:
                fields["status"] = "delivered"
            elif (len(attempts) >= self.policy.max_attempts
                  or now - first >= self.policy.retry_for):
                fields["status"] = "failed"
            else:
                delay = min(self.policy.max_delay,
                            self.policy.base_delay * 2 ** (len(attempts) - 1))
                fields["next_attempt_at"] = now + delay * jitter
            return current.changed(now, **fields)

        updated = await self.repo.modify(DELIVERY, delivery.id, record) or record(delivery)
        if updated.data["status"] in ("delivered", "failed"):
            await self.repo.delete(OUTBOX, delivery.id)
        return updated

    async def redeliver(self, tenant: str, delivery_id: str) -> CloudObject:
        """Send a delivery again now (same `webhook-id`), whatever its status."""
        delivery = await self.repo.get(DELIVERY, delivery_id)
        if delivery is None or delivery.tenant != tenant:
            raise NotFound(f"delivery {delivery_id!r} not found")
        now = self.clock.now()
        # Out of the deliverer's queue while this attempt runs, so it is sent once.
        await self.repo.delete(OUTBOX, delivery.id)
        again = await self.repo.merge(delivery, now, status="pending", next_attempt_at=now,
                                      first_attempt_at=None)
        result = await self.attempt(again)
        if result.data["status"] == "pending":  # failed: the deliverer retries it
            with contextlib.suppress(PartiturError):
                await self.repo.insert(CloudObject(OUTBOX, delivery.id, tenant, now, now))
        return result


def delivery_view(obj: CloudObject) -> dict[str, Any]:
    data = obj.data
    return {"id": obj.id, "webhook_id": data.get("webhook_id"), "job_id": data["job_id"],
            "event": data["event"], "url": data["url"], "status": data["status"],
            "message_id": data["msg_id"], "attempts": data["attempts"],
            "next_attempt_at": iso(data["next_attempt_at"]) if data["status"] == "pending"
            else None, "created_at": iso(obj.created_at), "updated_at": iso(obj.updated_at)}
