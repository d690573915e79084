"""Browser profiles: a browser step's Playwright `storage_state`, kept encrypted by name.

A profile is the cookies and local storage of a browser context, saved after a step with
`profile: {name, persist: true}` succeeds and loaded by later steps naming it. Profiles
are stored one file per workspace and name under the profiles folder, encrypted with
Fernet (AES-128-CBC + HMAC-SHA256) under a key derived from the server's `secrets_key`
by HKDF-SHA256. Without a `secrets_key` nothing is stored or loaded: the step fails with
a clear error rather than keep session cookies in plain text.
"""

from __future__ import annotations

import base64
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from engine.errors import PartiturError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

PROFILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")
_HKDF_INFO = b"partitur browser profiles v1"
_SUFFIX = ".profile"


class ProfileError(PartiturError):
    """A browser profile cannot be loaded or saved."""

    code = "profile_error"


def derive_key(secrets_key: str) -> bytes:
    """The Fernet key (urlsafe base64 of 32 bytes) derived from `secrets_key`."""
    # `cryptography` is imported when a profile is used, not by every server start.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        secrets_key.encode()
    )
    return base64.urlsafe_b64encode(raw)


def _check_name(kind: str, name: str) -> str:
    if not PROFILE_NAME.fullmatch(name):
        raise ProfileError(
            f"invalid {kind} name {name!r}: letters, digits, '_', '.' and '-' only "
            "(not starting with '.' or '-'), at most 100 characters"
        )
    return name


class ProfileStore:
    """Encrypted profiles under `root/<workspace>/<name>.profile`."""

    def __init__(self, root: Path, secrets_key: str | None) -> None:
        self.root = root
        self._fernet: Fernet | None = None
        if secrets_key:
            from cryptography.fernet import Fernet

            self._fernet = Fernet(derive_key(secrets_key))

    @property
    def enabled(self) -> bool:
        """Whether a `secrets_key` is configured (profiles need one)."""
        return self._fernet is not None

    def _require(self) -> Fernet:
        if self._fernet is None:
            raise ProfileError(
                "browser profiles are stored encrypted and need 'secrets_key' in the server "
                "config (or PARTITUR_SECRETS_KEY); none is configured"
            )
        return self._fernet

    def path(self, workspace: str, name: str) -> Path:
        """Where profile `name` of `workspace` is stored."""
        return self.root / _check_name("workspace", workspace) / (
            _check_name("profile", name) + _SUFFIX
        )

    def exists(self, workspace: str, name: str) -> bool:
        return self.path(workspace, name).is_file()

    def load(self, workspace: str, name: str) -> dict[str, Any] | None:
        """The stored storage state, or None when there is no such profile."""
        from cryptography.fernet import InvalidToken

        fernet = self._require()
        path = self.path(workspace, name)
        try:
            token = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = orjson.loads(fernet.decrypt(token))
        except InvalidToken:
            raise ProfileError(
                f"profile {name!r} cannot be decrypted (was 'secrets_key' changed?)"
            ) from None
        if not isinstance(data, dict):
            raise ProfileError(f"profile {name!r} is not a storage state object")
        return data

    def save(self, workspace: str, name: str, state: dict[str, Any]) -> None:
        """Encrypt and store `state`, replacing the profile atomically."""
        fernet = self._require()
        path = self.path(workspace, name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        token = fernet.encrypt(orjson.dumps(state))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(token)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def delete(self, workspace: str, name: str) -> bool:
        """Remove a profile; False when there was none."""
        try:
            self.path(workspace, name).unlink()
        except FileNotFoundError:
            return False
        return True

    def names(self, workspace: str) -> list[str]:
        """The profiles stored for `workspace`, sorted."""
        folder = self.root / _check_name("workspace", workspace)
        if not folder.is_dir():
            return []
        return sorted(p.name[: -len(_SUFFIX)] for p in folder.glob("*" + _SUFFIX)
                      if not p.name.startswith("."))
