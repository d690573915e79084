"""Password hashing: argon2id (argon2-cffi), verified in constant time.

A login for an unknown email still verifies against a fixed dummy hash, so the answer
takes as long as for a known one and does not reveal which emails exist. The hasher and
the dummy hash are made on first use: hashing the dummy costs ~0.3 s of CPU and 64 MiB
for a moment, which a server that never checks a password does not pay at start.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argon2 import PasswordHasher

MIN_LENGTH = 8


@functools.cache
def _hasher() -> PasswordHasher:
    from argon2 import PasswordHasher
    from argon2.low_level import Type

    return PasswordHasher(type=Type.ID)


@functools.cache
def _dummy() -> str:
    return _hasher().hash("not a password anyone has")


def prepare() -> None:
    """Make the hasher and the dummy hash now: a server with logins calls it at start, so
    even its first login for an unknown email takes as long as one for a known one."""
    _dummy()


def hash_password(password: str) -> str:
    """An argon2id hash (`$argon2id$…`) of `password`."""
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches `password_hash` (None: compare against a dummy, False)."""
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return _hasher().verify(password_hash or _dummy(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's."""
    return _hasher().check_needs_rehash(password_hash)
