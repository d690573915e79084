"""Diagnostics: field paths, "did you mean" hints, pydantic errors mapped back onto the
YAML a user wrote, and the text `partitur validate` prints."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.compiler.loader import Document, NodePath
from engine.errors import Issue
from engine.model import ACTION_FIELDS, StepSpec


def dotted(parts: Iterable[str | int]) -> str:
    """`("tasks", "build", "depends_on", 0)` → `tasks.build.depends_on[0]`."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """`did you mean 'depends_on'?` for the closest candidate, if one is close."""
    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None


def pydantic_issues(
    error: ValidationError,
    model: Any,
    document: Document,
    base: NodePath,
    raw: Any,
) -> list[Issue]:
    """One Issue per pydantic error, located in `document`.

    `raw` is the data validated against `model` (a model class or type), found at `base`
    in the document. Pydantic's error locations are translated back onto the keys the
    user wrote (an inline action folded into `inline` lives in the step itself, or under
    its `action:` mapping; union tags are dropped).
    """
    issues: list[Issue] = []
    for err in error.errors():
        loc = tuple(err["loc"])
        path = _yaml_path(raw, loc)
        kind = err["type"]
        hint: str | None = None
        key = False
        if kind == "missing":
            message = f"missing required field '{path[-1]}'"
            path = path[:-1]
            key = True
        elif kind == "extra_forbidden":
            name = str(path[-1]) if path else "?"
            message = f"unknown key '{name}'"
            hint = did_you_mean(name, known_keys(model, loc[:-1]))
            key = True
        else:
            message = str(err["msg"])
            for prefix in ("Value error, ", "Assertion failed, "):
                message = message.removeprefix(prefix)
            # A problem with a whole mapping is shown at its key.
            key = isinstance(_value_at(raw, path), dict)
        full = (*base, *path)
        issues.append(document.issue(message, full, dotted(full), hint=hint, key=key))
    return issues


def _yaml_path(raw: Any, loc: Sequence[str | int]) -> list[str | int]:
    out: list[str | int] = []
    current = raw
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(current, dict):
            found = _key_in(current, part)
            if found is not None:
                out.append(str(found))
                current = current[found]
                continue
            if part == "inline":
                if isinstance(current.get("action"), dict):
                    out.append("action")
                    current = current["action"]
                continue  # flat inline fields live in the step itself
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            out.append(part)
            current = current[part]
            continue
        if last:
            out.append(part)
        # otherwise a pydantic union tag such as `function-after[…]`: not in the YAML
    return out


def _value_at(raw: Any, path: Sequence[str | int]) -> Any:
    current = raw
    for part in path:
        if isinstance(current, dict):
            found = _key_in(current, part)
            if found is None:
                return None
            current = current[found]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        else:
            return None
    return current


def _key_in(mapping: dict[Any, Any], part: str | int) -> Any:
    if part in mapping:
        return part
    for key in mapping:
        if str(key) == str(part):
            return key
    return None


def known_keys(model: Any, loc: Sequence[str | int]) -> list[str]:
    """The keys a model accepts at `loc` (for "did you mean" hints)."""
    tp = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not isinstance(part, str) or part not in tp.model_fields:
                return []
            tp = tp.model_fields[part].annotation
            continue
        origin = typing.get_origin(tp)
        if origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin is list:
            tp = typing.get_args(tp)[0]
        else:
            return []
    tp = _unwrap(tp)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    names = set(tp.model_fields)
    if tp is StepSpec:
        names = (names | ACTION_FIELDS) - {"inline"}
    return sorted(names)


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin is typing.Union or origin is types.UnionType:
            options = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = options[0] if options else tp
            if not options:
                return tp
        else:
            return tp


def sort_issues(issues: Iterable[Issue]) -> list[Issue]:
    """Issues in file, line, column order (issues without a file first)."""
    return sorted(
        issues, key=lambda i: (i.file or "", i.line or 0, i.column or 0, i.path, i.message)
    )


def format_issue(issue: Issue) -> str:
    """`file:line:col: error: path: message (hint)`."""
    where = issue.location()
    parts = [where] if where else []
    parts.append(issue.severity)
    if issue.path and issue.file is not None:
        parts.append(issue.path)
    text = ": ".join(parts) + ": " + issue.message
    if issue.hint:
        text += f" ({issue.hint})"
    return text


def format_issues(issues: Iterable[Issue]) -> str:
    """Every issue on its own line, in file order, then a count."""
    ordered = sort_issues(issues)
    errors = sum(1 for i in ordered if i.severity == "error")
    warnings = len(ordered) - errors
    lines = [format_issue(i) for i in ordered]
    counts = [_plural(errors, "error"), _plural(warnings, "warning")]
    lines.append(", ".join(counts))
    return "\n".join(lines)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")
