"""Tenant credentials of the cloud API: encrypted at rest, given only to the workflows that
declare them.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the `cryptography`
package) under a key derived from the server's `secrets_key` with HKDF-SHA256; lists
show metadata only. A workflow declares the credentials it uses in its input schema:
a secret object field `credentials` whose `default` names them
(`credentials: {type: object, secret: true, default: {api_token: null}}` → template
`<< input.credentials.api_token >>`), or a secret field with the credential's own name.
Only declared credentials reach a job; as secret input they are redacted from logs.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.clock import Clock, SystemClock, new_job_id
from engine.errors import Conflict, Issue, NotFound, PartiturError, ValidationFailed
from engine.model import TaskSpec
from engine.store.cloud import CloudObject, CloudRepository

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

CREDENTIAL = "credential"
CREDENTIALS_FIELD = "credentials"
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
MAX_VALUE = 64 * 1024


class Cipher:
    """Fernet under an HKDF-derived key; `purpose` separates keys for different uses.

    The key is derived (and `cryptography` imported) on the first encrypt or decrypt: a
    server that never stores a credential does not load it.
    """

    def __init__(self, secrets_key: str, purpose: str = "partitur/credentials/v1") -> None:
        self._secrets_key = secrets_key
        self._purpose = purpose
        self._fernet_: Fernet | None = None

    @property
    def _fernet(self) -> Fernet:
        if self._fernet_ is None:
            from cryptography.fernet import Fernet
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.kdf.hkdf import HKDF

            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=self._purpose.encode()).derive(self._secrets_key.encode())
            self._fernet_ = Fernet(base64.urlsafe_b64encode(key))
        return self._fernet_

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise PartiturError("a stored value cannot be decrypted (was secrets_key "
                                "changed?)") from None


def declared(task: TaskSpec) -> tuple[set[str], bool]:
    """Credential names a workflow declares, and whether it uses the `credentials` object."""
    names: set[str] = set()
    field = task.input.get(CREDENTIALS_FIELD)
    as_object = field is not None and field.secret and field.type == "object"
    if as_object and field is not None and isinstance(field.default, Mapping):
        names.update(str(k) for k in field.default)
    names.update(n for n, f in task.input.items() if f.secret and n != CREDENTIALS_FIELD)
    return names, as_object


def metadata(obj: CloudObject) -> dict[str, Any]:
    from engine.views import iso

    return {"id": obj.id, "name": obj.name, "description": obj.data.get("description"),
            "created_at": iso(obj.created_at), "updated_at": iso(obj.updated_at)}


class Credentials:
    """Create, read, update, upsert and delete a tenant's credentials."""

    def __init__(self, repo: CloudRepository, cipher: Cipher, *,
                 clock: Clock | None = None) -> None:
        self.repo = repo
        self.cipher = cipher
        self.clock: Clock = clock or SystemClock()

    @staticmethod
    def _check(name: Any, value: Any) -> None:
        issues = []
        if not isinstance(name, str) or not NAME.match(name):
            issues.append(Issue(message="'name' must be 1-128 letters, digits, '_', '.', '-' "
                                        "starting with a letter or '_'", path="name"))
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            issues.append(Issue(message=f"'value' must be a string of at most {MAX_VALUE} "
                                        "characters", path="value"))
        if issues:
            raise ValidationFailed(issues=issues)

    async def create(self, tenant: str, name: str, value: str,
                     description: str | None = None) -> CloudObject:
        self._check(name, value)
        now = self.clock.now()
        obj = CloudObject(CREDENTIAL, new_job_id(), tenant, now, now,
                          {"value": self.cipher.encrypt(value), "description": description},
                          name=name)
        try:
            await self.repo.insert(obj)
        except Conflict:
            raise Conflict(f"credential {name!r} exists (use credentials/upsert)") from None
        return obj

    async def upsert(self, tenant: str, name: str, value: str,
                     description: str | None = None) -> tuple[CloudObject, bool]:
        """Create or overwrite by name; True when an existing value was overwritten."""
        self._check(name, value)
        existing = await self.repo.by_name(CREDENTIAL, tenant, name)
        if existing is None:
            try:
                return await self.create(tenant, name, value, description), False
            except Conflict:
                existing = await self.repo.by_name(CREDENTIAL, tenant, name)
                if existing is None:
                    raise
        data: dict[str, Any] = {"value": self.cipher.encrypt(value)}
        if description is not None:
            data["description"] = description
        return await self.repo.merge(existing, self.clock.now(), **data), True

    async def find(self, tenant: str, *, name: str | None = None,
                   cred_id: str | None = None) -> CloudObject:
        obj = (await self.repo.by_name(CREDENTIAL, tenant, name) if name is not None
               else await self.repo.get(CREDENTIAL, cred_id or ""))
        if obj is None or obj.tenant != tenant:
            raise NotFound(f"credential {name or cred_id!r} not found")
        return obj

    def value(self, obj: CloudObject) -> str:
        return self.cipher.decrypt(obj.data["value"])

    async def update(self, tenant: str, cred_id: str, *, name: str | None = None,
                     value: str | None = None, description: str | None = None) -> CloudObject:
        obj = await self.find(tenant, cred_id=cred_id)
        self._check(name if name is not None else obj.name,
                    value if value is not None else "")
        data: dict[str, Any] = {}
        if value is not None:
            data["value"] = self.cipher.encrypt(value)
        if description is not None:
            data["description"] = description
        updated = obj.changed(self.clock.now(), **data)
        if name is not None:
            updated = CloudObject(updated.kind, updated.id, updated.tenant, updated.created_at,
                                  updated.updated_at, updated.data, name=name)
        await self.repo.update(updated)
        return updated

    async def list_for(self, tenant: str) -> list[CloudObject]:
        return await self.repo.all(CREDENTIAL, tenant, cap=10_000)

    async def delete(self, obj: CloudObject) -> None:
        await self.repo.delete(CREDENTIAL, obj.id)

    async def for_task(self, tenant: str, task: TaskSpec,
                       params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """`params` with the declared credentials filled in, and the names used.

        Only declared names are read; a caller cannot inject the `credentials` object.
        """
        names, as_object = declared(task)
        out = dict(params)
        used: list[str] = []
        given: dict[str, Any] = {}
        for name in sorted(names):
            obj = await self.repo.by_name(CREDENTIAL, tenant, name)
            if obj is None:
                continue
            in_object = as_object and isinstance(task.input[CREDENTIALS_FIELD].default,
                                                 Mapping) and name in task.input[
                CREDENTIALS_FIELD].default
            if in_object:
                given[name] = self.value(obj)
                used.append(name)
            elif name in task.input and out.get(name) is None:
                out[name] = self.value(obj)
                used.append(name)
        if as_object:
            out[CREDENTIALS_FIELD] = given
        return out, used
