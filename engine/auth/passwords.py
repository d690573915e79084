"""Password hashing: argon2id (argon2-cffi), verified in constant time.

A login for an unknown email still verifies against a fixed dummy hash, so the answer
takes as long as for a known one and does not reveal which emails exist.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import Type

MIN_LENGTH = 8

_hasher = PasswordHasher(type=Type.ID)
_DUMMY = _hasher.hash("not a password anyone has")


def hash_password(password: str) -> str:
    """An argon2id hash (`$argon2id$…`) of `password`."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches `password_hash` (None: compare against a dummy, False)."""
    try:
        return _hasher.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with weaker parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)
