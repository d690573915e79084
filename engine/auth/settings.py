"""The `auth` section of the server configuration (docs/auth.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from engine.model import Duration


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InitialUser(_Section):
    """`auth.initial_user`: the first admin, created at start when no user has its email."""

    email: str = Field(min_length=3)
    password: str = Field(min_length=8, repr=False)
    name: str | None = None


class RateLimit(_Section):
    """`auth.rate_limit`: login attempts per IP, failed logins per email, per window."""

    per_ip: int = Field(default=20, ge=1)
    per_user: int = Field(default=5, ge=1)
    window: Duration = 60.0


class AuthSettings(_Section):
    """`auth`: present means every `/api` route needs credentials."""

    initial_user: InitialUser | None = None
    access_ttl: Duration = Field(default=900.0, gt=0)
    refresh_ttl: Duration = Field(default=30 * 86400.0, gt=0)
    ticket_ttl: Duration = Field(default=30.0, gt=0)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
