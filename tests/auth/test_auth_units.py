"""Pure parts of auth: ACL evaluation, token formats, password hashing, and that every
secret comparison is constant-time (by code path, not by timing)."""

from __future__ import annotations

import ast
import hmac
from pathlib import Path
from typing import Any

import pytest

from engine.auth import passwords, tokens
from engine.auth.acl import Acl, AclRule, Level
from engine.auth.model import User

ROOT = Path(__file__).resolve().parents[2]
AUTH_CODE = [*sorted((ROOT / "engine" / "auth").glob("*.py")), ROOT / "server" / "auth.py"]
SECRET_WORDS = ("hash", "signature", "secret", "token", "password", "key", "ticket",
                "expected", "credential")


def _user(**kw: Any) -> User:
    return User(user_id="u1", email="Ann@x.io", name="ann", **kw)


def test_acl_highest_level_wins_and_no_match_denies() -> None:
    acl = Acl([AclRule(tasks=("ci/*",), action="deny", groups=("dev",)),
               AclRule(tasks=("ci/*",), action="view", users=("ann@x.io",)),
               AclRule(workspace="prod", tasks=("*",), action="run")])
    dev = _user(groups=("dev",))
    assert acl.level(dev, "main", "build", "ci") == Level.VIEW
    assert acl.level(dev, "main", "build") == Level.DENY  # no folder: path is "build"
    assert acl.level(dev, "prod", "anything") == Level.RUN  # a rule without users/groups
    assert acl.level(_user(is_admin=True), "main", "x") == Level.RUN
    assert acl.level(None, "main", "x") == Level.RUN  # auth off
    assert Acl(None).level(dev, "main", "x") == Level.RUN  # no acl section
    assert Acl([]).level(dev, "main", "x") == Level.DENY


def test_access_token_round_trip_and_tamper() -> None:
    secret = b"s" * 32
    token = tokens.sign_access(secret, "u1", now=100.0, ttl=10.0)
    assert tokens.verify_access(secret, token, 105.0) == "u1"
    assert tokens.verify_access(secret, token, 110.0) is None  # expired
    assert tokens.verify_access(b"other" * 8, token, 105.0) is None
    head, _payload, sig = token.split(".")
    other = tokens.sign_access(secret, "admin", now=100.0, ttl=10.0).split(".")[1]
    assert tokens.verify_access(secret, f"{head}.{other}.{sig}", 105.0) is None
    assert tokens.verify_access(secret, "pat.%%%.x", 105.0) is None
    prefix, key = tokens.new_api_key()
    assert tokens.key_prefix(key) == prefix and tokens.key_prefix("pk_") is None


def test_passwords_are_argon2id() -> None:
    hashed = passwords.hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert passwords.verify_password(hashed, "correct horse")
    assert not passwords.verify_password(hashed, "wrong horse")
    assert not passwords.verify_password(None, "correct horse")
    assert not passwords.verify_password("not a hash", "x")


def test_signature_and_key_checks_go_through_compare_digest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", counting)
    token = tokens.sign_access(b"k" * 32, "u1", now=0.0, ttl=60.0)
    assert tokens.verify_access(b"k" * 32, token[:-2] + "xx", 1.0) is None
    assert tokens.same("a", "b") is False
    assert len(calls) == 2


def test_no_secret_is_compared_with_equality() -> None:
    """No `==`/`!=` on anything named like a secret in the auth code (use tokens.same)."""
    offenders = []
    for path in AUTH_CODE:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            if any(isinstance(side, ast.Constant) for side in (node.left, *node.comparators)):
                continue  # a header name or a literal, not a secret
            names = [ast.unparse(side).lower() for side in (node.left, *node.comparators)]
            if any(word in name for name in names for word in SECRET_WORDS
                   if not name.endswith(("user_id", "_at", "via", "status"))):
                offenders.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []
