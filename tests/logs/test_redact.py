from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import orjson
import pytest

from engine.logs.redact import MASK, Redactor

SECRET = 'p@ss wörd/"x+'


def test_no_secrets_returns_text_unchanged() -> None:
    redactor = Redactor([])
    text = "nothing to hide"
    assert not redactor
    assert redactor.redact(text) is text


def test_short_and_empty_secrets_are_ignored() -> None:
    redactor = Redactor(["", "a", "ab"])
    assert not redactor
    assert redactor.redact("a cab") == "a cab"


def test_every_occurrence_is_masked() -> None:
    redactor = Redactor(["hunter2"])
    assert redactor.redact("hunter2 and hunter2hunter2") == f"{MASK} and {MASK}{MASK}"


def test_longest_secret_wins() -> None:
    redactor = Redactor(["token", "token-with-suffix"])
    assert redactor.redact("x token-with-suffix y token") == f"x {MASK} y {MASK}"


def test_regex_metacharacters_are_literal() -> None:
    redactor = Redactor([".*+?"])
    assert redactor.redact("abc .*+? def") == f"abc {MASK} def"


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(SECRET.encode()).decode(),
        base64.b64encode(SECRET.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(SECRET.encode()).decode(),
        quote(SECRET, safe=""),
        quote(SECRET, safe="").lower(),
        quote_plus(SECRET, safe=""),
        orjson.dumps(SECRET).decode()[1:-1],
        json.dumps(SECRET)[1:-1],
    ],
)
def test_encoded_forms_are_masked(encoded: str) -> None:
    assert encoded != SECRET
    redactor = Redactor([SECRET])
    redacted = redactor.redact(f"before {encoded} after")
    assert redacted == f"before {MASK} after"


def test_secret_inside_a_json_document() -> None:
    redactor = Redactor([SECRET])
    document = json.dumps({"password": SECRET, "user": "bob"})
    assert SECRET not in redactor.redact(document)
    assert '"user": "bob"' in redactor.redact(document)


def test_with_secrets_adds() -> None:
    redactor = Redactor(["alpha"]).with_secrets(["bravo"])
    assert redactor.redact("alpha bravo charlie") == f"{MASK} {MASK} charlie"
