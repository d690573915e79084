"""Credential formats: signed access tokens, API keys, refresh tokens and WS tickets.

- Access token `pat.<payload>.<sig>`: base64url JSON `{sub, iat, exp}` signed with
  HMAC-SHA256 under the server's secret; checked with `hmac.compare_digest`.
- API key `pk_<prefix>_<secret>`: the prefix (public, 12 hex chars) finds the stored
  record, the SHA-256 of the whole key is compared with `hmac.compare_digest`.
- Refresh token `prt_<random>` and ticket `pwt_<random>`: only their SHA-256 is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import orjson

ACCESS_PREFIX = "pat."
KEY_PREFIX = "pk_"
REFRESH_PREFIX = "prt_"
TICKET_PREFIX = "pwt_"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def digest(value: str) -> str:
    """SHA-256 hex of a high-entropy secret (keys, refresh tokens, tickets)."""
    return hashlib.sha256(value.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time string comparison (the only one auth code uses for secrets)."""
    return hmac.compare_digest(a.encode(), b.encode())


def sign_access(secret: bytes, user_id: str, now: float, ttl: float) -> str:
    """A signed access token for `user_id` valid from `now` for `ttl` seconds."""
    payload = _b64(orjson.dumps({"sub": user_id, "iat": now, "exp": now + ttl}))
    signature = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    return f"{ACCESS_PREFIX}{payload}.{signature}"


def verify_access(secret: bytes, token: str, now: float) -> str | None:
    """The user id of a valid, unexpired access token; None for anything else."""
    if not token.startswith(ACCESS_PREFIX):
        return None
    payload, _, signature = token[len(ACCESS_PREFIX):].partition(".")
    expected = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    if not same(signature, expected):
        return None
    try:
        claims = orjson.loads(_unb64(payload))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str):
        return None
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or now >= exp:
        return None
    return str(claims["sub"])


def new_api_key() -> tuple[str, str]:
    """(prefix, key) of a fresh API key."""
    prefix = secrets.token_hex(6)
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def key_prefix(key: str) -> str | None:
    """The prefix of something shaped like an API key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, sep, rest = key[len(KEY_PREFIX):].partition("_")
    return prefix if sep and prefix and rest else None


def new_refresh_token() -> str:
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def new_ticket() -> str:
    return TICKET_PREFIX + secrets.token_urlsafe(24)
