"""Inbound webhooks, independent of HTTP: find the hook, check the secret, start the job.

A webhook trigger is found by its `name` (default: the trigger's own name) among the
current revisions of all workspaces; an unknown or disabled one is `NotFound`.

The secret (the trigger's `secret`, which may be a template such as
`<< secret.HOOK_SECRET >>`) is checked in constant time, by the first of:
- `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>` (GitHub, Gitea);
- Standard Webhooks: `webhook-id`, `webhook-timestamp` (within 5 minutes) and
  `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` (space-separated
  list; a `whsec_` secret is base64-decoded first);
- `Authorization: Bearer <secret>`;
- `?secret=<secret>`, only when the trigger sets `allow_query_secret: true`.
Anything else is `Unauthorized`. A hook without a secret accepts every request.

The job's input offers `body` (JSON when it parses as JSON, a form as an object,
otherwise text), `headers` (lower-case names, credentials removed), `method` and `query`;
see `engine.triggers.common` for how they meet the task's schema. A delivery id
(`X-GitHub-Delivery`, `webhook-id`, `Idempotency-Key`) makes a repeat return the first
job: it is the job's idempotency key `hook:<name>:<id>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

from engine.compiler.templating import render_text
from engine.errors import NotFound, Unauthorized
from engine.model import TriggerSpec
from engine.triggers.common import trigger_input, trigger_key
from engine.workspaces import WorkspaceRegistry

TIMESTAMP_TOLERANCE = 300.0
QUERY_SECRET = "secret"
DELIVERY_HEADERS = ("x-github-delivery", "webhook-id", "idempotency-key")
MAX_DELIVERY_ID = 200
_HIDDEN_HEADERS = frozenset({
    "authorization", "cookie", "proxy-authorization", "x-hub-signature",
    "x-hub-signature-256", "webhook-signature", "x-gitlab-token",
})


@dataclass(frozen=True)
class Hook:
    """A webhook trigger of a workspace's current revision."""

    workspace: str
    trigger: str
    spec: TriggerSpec

    @property
    def name(self) -> str:
        return self.spec.name or self.trigger

    @property
    def key(self) -> str:
        return trigger_key(self.workspace, self.trigger)


@dataclass(frozen=True)
class Delivery:
    """One inbound request, as the webhook logic needs it."""

    method: str
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    body: bytes


def find_hook(registry: WorkspaceRegistry, name: str) -> Hook:
    """The enabled webhook trigger called `name`; `NotFound` otherwise."""
    for ws in registry.all():
        if ws.current is None:
            continue
        for trigger, spec in ws.current.spec.triggers.items():
            if spec.type == "webhook" and (spec.name or trigger) == name and spec.enabled:
                return Hook(ws.name, trigger, spec)
    raise NotFound(f"webhook {name!r} not found")


def hook_secret(registry: WorkspaceRegistry, hook: Hook) -> str | None:
    """The hook's secret with its templates rendered (None: the hook has no secret)."""
    if not hook.spec.secret:
        return None
    secrets = registry.get(hook.workspace).secrets
    return render_text(hook.spec.secret, {"secret": secrets}, where="secret")


def _same(a: str | bytes, b: str | bytes) -> bool:
    left = a.encode() if isinstance(a, str) else a
    right = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


def _standard_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def verify(secret: str | None, delivery: Delivery, *, now: float,
           allow_query_secret: bool = False) -> None:
    """Raise `Unauthorized` unless the delivery proves it knows `secret`."""
    if secret is None:
        return
    headers = delivery.headers
    hub = headers.get("x-hub-signature-256")
    if hub is not None:
        digest = hmac.new(secret.encode(), delivery.body, hashlib.sha256).hexdigest()
        if _same(hub.strip(), f"sha256={digest}"):
            return
        raise Unauthorized("invalid X-Hub-Signature-256 signature")
    signature = headers.get("webhook-signature")
    if signature is not None:
        msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        try:
            sent = float(stamp)
        except ValueError:
            raise Unauthorized("missing or invalid webhook-timestamp") from None
        if abs(now - sent) > TIMESTAMP_TOLERANCE:
            raise Unauthorized("webhook-timestamp is too far from now")
        signed = msg_id.encode() + b"." + stamp.encode() + b"." + delivery.body
        expected = base64.b64encode(
            hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()).decode()
        ok = False
        for part in signature.split():
            version, _, value = part.partition(",")
            ok |= version == "v1" and _same(value, expected)
        if ok:
            return
        raise Unauthorized("invalid webhook-signature")
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and _same(token.strip(), secret):
            return
        raise Unauthorized("invalid bearer token")
    if allow_query_secret and QUERY_SECRET in delivery.query:
        if _same(delivery.query[QUERY_SECRET], secret):
            return
        raise Unauthorized("invalid secret")
    raise Unauthorized("this webhook needs a signature or a bearer token")


def delivery_id(headers: Mapping[str, str]) -> str | None:
    """The delivery id of a request, if it sent one."""
    for name in DELIVERY_HEADERS:
        value = headers.get(name, "").strip()
        if value:
            return value[:MAX_DELIVERY_ID]
    return None


def parse_body(body: bytes, content_type: str) -> Any:
    """The request body as the job sees it: JSON, a form as an object, or text."""
    kind = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if kind == "application/x-www-form-urlencoded":
        return dict(parse_qsl(text, keep_blank_values=True))
    if not body.strip():
        return None
    if "json" in kind or kind in ("", "text/plain"):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            return text
    return text


def offered_input(delivery: Delivery) -> dict[str, Any]:
    """`{body, headers, method, query}` of a delivery (credentials removed)."""
    return {
        "body": parse_body(delivery.body, delivery.headers.get("content-type", "")),
        "headers": {k: v for k, v in delivery.headers.items() if k not in _HIDDEN_HEADERS},
        "method": delivery.method.upper(),
        "query": {k: v for k, v in delivery.query.items() if k != QUERY_SECRET},
    }


def webhook_input(registry: WorkspaceRegistry, hook: Hook, delivery: Delivery) -> dict[str, Any]:
    """The raw job input for a delivery (validated later by the task's input schema)."""
    ws = registry.get(hook.workspace)
    task = ws.require().spec.tasks.get(hook.spec.task)
    if task is None:
        raise NotFound(f"webhook {hook.name!r}: task {hook.spec.task!r} not found")
    offered = offered_input(delivery)
    return trigger_input(hook.spec, task, secrets=ws.secrets, context=offered, offered=offered)
