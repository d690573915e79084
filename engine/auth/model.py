"""The records the auth repository keeps: users, API keys, refresh tokens, WS tickets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class User:
    """An internal account; `password_hash` is an argon2id hash or None (no password)."""

    user_id: str
    email: str
    name: str
    password_hash: str | None = field(default=None, repr=False)
    is_admin: bool = False
    groups: tuple[str, ...] = ()
    created_at: float = 0.0
    last_login_at: float | None = None


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as stored: its public prefix and the SHA-256 of the whole key."""

    prefix: str
    user_id: str
    name: str
    key_hash: str = field(repr=False)
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    def usable(self, now: float) -> bool:
        """Not revoked and not expired at `now`."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """One refresh token of a login `family`; `used_at` is set when it is rotated."""

    token_hash: str = field(repr=False)
    user_id: str
    family: str
    created_at: float
    expires_at: float
    used_at: float | None = None
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as, and by which credential (`token` or `api_key`)."""

    user: User
    via: str
    key_prefix: str | None = None

    @property
    def name(self) -> str:
        """What audit records (`by`) name: the user's email."""
        return self.user.email
