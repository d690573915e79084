"""`AuthService`: login, token rotation, API keys, tickets and credential checks.

Every secret comparison goes through `hmac.compare_digest` (`tokens.same`) or argon2's
verify. Errors are `Unauthorized` (401), `Forbidden` (403), `NotFound`, `Conflict`,
`ValidationFailed` and `RateLimited` (429); messages never say which part was wrong.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from dataclasses import dataclass

from engine.auth import tokens
from engine.auth.model import ApiKey, Principal, RefreshToken, User
from engine.auth.passwords import MIN_LENGTH, hash_password, needs_rehash, verify_password
from engine.auth.ratelimit import SlidingWindow
from engine.auth.repo import AuthRepository
from engine.auth.settings import AuthSettings
from engine.clock import Clock, SystemClock
from engine.errors import Issue, LimitExceeded, NotFound, Unauthorized, ValidationFailed

SECRET_NAME = "access_token_hmac"
INVALID = "invalid or expired credentials"


class RateLimited(LimitExceeded):
    """Too many attempts; try again later."""

    code = "rate_limited"

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Session:
    """What login and refresh return."""

    user: User
    access_token: str
    refresh_token: str
    expires_in: float


class AuthService:
    """The auth operations over a repository, with settings and a clock."""

    def __init__(self, repo: AuthRepository, settings: AuthSettings, *,
                 clock: Clock | None = None) -> None:
        self.repo = repo
        self.settings = settings
        self.clock = clock or SystemClock()
        limits = settings.rate_limit
        self._per_ip = SlidingWindow(limits.per_ip, limits.window)
        self._per_user = SlidingWindow(limits.per_user, limits.window)
        self._secret: bytes | None = None

    async def open(self) -> None:
        """Load (or create) the signing secret and the initial admin."""
        self._secret = await self.repo.ensure_secret(SECRET_NAME, secrets.token_bytes(32))
        initial = self.settings.initial_user
        if initial is not None and await self.repo.get_user_by_email(initial.email) is None:
            await self.create_user(initial.email, initial.password, initial.name, is_admin=True)

    @property
    def secret(self) -> bytes:
        if self._secret is None:
            raise RuntimeError("AuthService.open() was not awaited")
        return self._secret

    # --- users -----------------------------------------------------------------------

    async def create_user(self, email: str, password: str | None, name: str | None = None,
                          *, is_admin: bool = False, groups: tuple[str, ...] = ()) -> User:
        """A new user; `Conflict` if the email is taken."""
        email = email.strip()
        issues = []
        if "@" not in email or len(email) > 320:
            issues.append(Issue(message="'email' must be an email address", path="email"))
        if password is not None and len(password) < MIN_LENGTH:
            issues.append(Issue(message=f"'password' must have at least {MIN_LENGTH} "
                                        "characters", path="password"))
        if issues:
            raise ValidationFailed(issues=issues)
        user = User(user_id=str(uuid.uuid4()), email=email, name=name or email.split("@")[0],
                    password_hash=hash_password(password) if password is not None else None,
                    is_admin=is_admin, groups=tuple(groups), created_at=self.clock.now())
        await self.repo.create_user(user)
        return user

    async def require_user(self, user_id: str) -> User:
        user = await self.repo.get_user(user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} not found")
        return user

    async def update_user(self, user: User) -> User:
        if not await self.repo.update_user(user):
            raise NotFound(f"user {user.user_id!r} not found")
        return user

    # --- login and tokens ------------------------------------------------------------

    async def login(self, email: str, password: str, ip: str) -> Session:
        """Check the password (rate-limited per IP and per email) and open a session."""
        now = self.clock.now()
        user_key = email.strip().lower()
        for window, key in ((self._per_ip, ip), (self._per_user, user_key)):
            wait = window.blocked(key, now)
            if wait is not None:
                raise RateLimited("too many login attempts; try again later",
                                  retry_after=wait)
        self._per_ip.hit(ip, now)
        user = await self.repo.get_user_by_email(user_key)
        if not verify_password(user.password_hash if user else None, password) or user is None:
            self._per_user.hit(user_key, now)
            raise Unauthorized("invalid email or password")
        self._per_user.reset(user_key)
        if user.password_hash is not None and needs_rehash(user.password_hash):
            user = dataclasses.replace(user, password_hash=hash_password(password))
        user = dataclasses.replace(user, last_login_at=now)
        await self.repo.update_user(user)
        return await self._session(user, family=str(uuid.uuid4()), now=now)

    async def _session(self, user: User, family: str, now: float) -> Session:
        refresh = tokens.new_refresh_token()
        await self.repo.create_refresh(RefreshToken(
            token_hash=tokens.digest(refresh), user_id=user.user_id, family=family,
            created_at=now, expires_at=now + self.settings.refresh_ttl))
        access = tokens.sign_access(self.secret, user.user_id, now, self.settings.access_ttl)
        return Session(user, access, refresh, self.settings.access_ttl)

    async def refresh(self, refresh_token: str) -> Session:
        """Rotate a refresh token; a token used a second time revokes its whole family."""
        now = self.clock.now()
        used = await self.repo.use_refresh(tokens.digest(refresh_token), now)
        if used is None:
            raise Unauthorized(INVALID)
        token, first = used
        if not first:
            await self.repo.revoke_family(token.family, now)
            raise Unauthorized("refresh token reused; every session of this login is revoked")
        if token.revoked_at is not None or now >= token.expires_at:
            raise Unauthorized(INVALID)
        user = await self.repo.get_user(token.user_id)
        if user is None:
            raise Unauthorized(INVALID)
        return await self._session(user, token.family, now)

    async def logout(self, user: User, refresh_token: str | None) -> int:
        """Revoke the family of `refresh_token` (the user's own), or all the user's tokens."""
        now = self.clock.now()
        if refresh_token is None:
            return await self.repo.revoke_user_tokens(user.user_id, now)
        used = await self.repo.use_refresh(tokens.digest(refresh_token), now)
        if used is None or used[0].user_id != user.user_id:
            raise NotFound("no such refresh token")
        return await self.repo.revoke_family(used[0].family, now)

    # --- credentials -----------------------------------------------------------------

    async def authenticate(self, credential: str) -> Principal:
        """The principal of an access token or API key; `Unauthorized` for anything else."""
        now = self.clock.now()
        prefix = tokens.key_prefix(credential)
        if prefix is not None:
            key = await self.repo.get_api_key(prefix)
            # Compare even when the prefix is unknown, so both take the same path.
            stored = key.key_hash if key is not None else tokens.digest("")
            if not tokens.same(tokens.digest(credential), stored) or key is None:
                raise Unauthorized(INVALID)
            if not key.usable(now):
                raise Unauthorized(INVALID)
            user = await self.repo.get_user(key.user_id)
            if user is None:
                raise Unauthorized(INVALID)
            return Principal(user, "api_key", key.prefix)
        user_id = tokens.verify_access(self.secret, credential, now)
        if user_id is None:
            raise Unauthorized(INVALID)
        user = await self.repo.get_user(user_id)
        if user is None:
            raise Unauthorized(INVALID)
        return Principal(user, "token")

    # --- API keys --------------------------------------------------------------------

    async def create_key(self, user: User, name: str,
                         expires_at: float | None) -> tuple[ApiKey, str]:
        """A new key of `user`: the stored record and the key itself (shown once)."""
        now = self.clock.now()
        if expires_at is not None and expires_at <= now:
            raise ValidationFailed(issues=[Issue(message="'expires_at' must be in the future",
                                                 path="expires_at")])
        prefix, key = tokens.new_api_key()
        record = ApiKey(prefix=prefix, user_id=user.user_id, name=name,
                        key_hash=tokens.digest(key), created_at=now, expires_at=expires_at)
        await self.repo.create_api_key(record)
        return record, key

    async def revoke_key(self, actor: User, prefix: str) -> ApiKey:
        """Revoke a key of `actor` (any key for an admin); 404 for anyone else's."""
        key = await self.repo.get_api_key(prefix)
        if key is None or (key.user_id != actor.user_id and not actor.is_admin):
            raise NotFound(f"API key {prefix!r} not found")
        now = self.clock.now()
        await self.repo.revoke_api_key(prefix, now)
        return dataclasses.replace(key, revoked_at=key.revoked_at or now)

    # --- WebSocket tickets -----------------------------------------------------------

    async def issue_ticket(self, user: User) -> str:
        ticket = tokens.new_ticket()
        await self.repo.create_ticket(tokens.digest(ticket), user.user_id,
                                      self.clock.now() + self.settings.ticket_ttl)
        return ticket

    async def redeem_ticket(self, ticket: str) -> Principal:
        """The principal of a ticket, which can never be used again."""
        user_id = await self.repo.take_ticket(tokens.digest(ticket), self.clock.now())
        user = await self.repo.get_user(user_id) if user_id is not None else None
        if user is None:
            raise Unauthorized(INVALID)
        return Principal(user, "ticket")
