"""Secret redaction: known secret values never reach a stored or sent log line (DESIGN §7).

A `Redactor` replaces every occurrence of a secret with `••••••`, and also the common
encodings a script may print it in: base64 (standard and URL-safe, padded or not),
URL-encoding (`%XX`, either hex case, and `+` for spaces) and JSON string escaping.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

import orjson

MASK = "••••••"
MIN_SECRET_LENGTH = 3


def _literal(text: str) -> str:
    return re.escape(text)


def _url_pattern(encoded: str) -> str:
    """`encoded` as a pattern in which each `%XX` matches either hex case."""
    parts: list[str] = []
    i = 0
    while i < len(encoded):
        if encoded[i] == "%" and i + 2 < len(encoded):
            hex_digits = encoded[i + 1 : i + 3]
            parts.append("%" + "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c
                                       for c in hex_digits))
            i += 3
        else:
            parts.append(re.escape(encoded[i]))
            i += 1
    return "".join(parts)


def _forms(secret: str) -> set[tuple[str, int]]:
    """Patterns matching `secret` and its encodings, each with the length it sorts by."""
    raw = secret.encode()
    forms = {(_literal(secret), len(secret))}
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        stripped = encoded.rstrip("=")
        if len(stripped) >= MIN_SECRET_LENGTH:
            forms.add((_literal(stripped) + "={0,2}", len(encoded)))
    for encoded in (quote(secret, safe=""), quote_plus(secret, safe="")):
        if encoded != secret:
            forms.add((_url_pattern(encoded), len(encoded)))
    for encoded in (orjson.dumps(secret).decode()[1:-1], json.dumps(secret)[1:-1]):
        if encoded != secret:
            forms.add((_literal(encoded), len(encoded)))
    return forms


class Redactor:
    """Masks known secret values in text.

    Empty secrets and secrets shorter than 3 characters are ignored: masking them would
    mangle ordinary output (every `a` or `1`) while protecting nothing worth a secret.
    Longer secrets are matched first, so a secret that contains another is masked whole.
    """

    __slots__ = ("_pattern", "secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        given = [s for s in secrets if isinstance(s, str)]
        # Logs are line by line: each line of a multi-line secret (a PEM key) is masked too.
        lines = [line for s in given if "\n" in s or "\r" in s for line in s.splitlines()]
        self.secrets: frozenset[str] = frozenset(
            [s for s in given if len(s) >= MIN_SECRET_LENGTH]
            + [s for s in lines if len(s.strip()) >= MIN_SECRET_LENGTH]
        )
        forms: set[tuple[str, int]] = set()
        for secret in self.secrets:
            forms |= _forms(secret)
        ordered = sorted(forms, key=lambda form: (-form[1], form[0]))
        self._pattern = re.compile("|".join(p for p, _ in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def with_secrets(self, secrets: Iterable[str]) -> Redactor:
        """A redactor that also masks `secrets`."""
        return Redactor(self.secrets | set(secrets))

    def redact(self, text: str) -> str:
        """`text` with every known secret (and its encodings) replaced by `••••••`."""
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)
