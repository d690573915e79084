"""Job input: validated and coerced against an input schema before any event exists.

`coerce_input` checks every field and reports every bad one at once (`InputInvalid`, one
`Issue` per field, `path` = the field name). Values are coerced to their type: `"5"` for an
integer becomes `5`, `"yes"` for a boolean becomes `True`, a JSON string for an object
becomes a dict, a connection name becomes that connection's properties.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from engine.compiler.diagnostics import did_you_mean
from engine.compiler.templating import build_context, has_template, render_value
from engine.errors import InputInvalid, Issue, RenderError
from engine.model import InputField

_INTEGER = re.compile(r"^[+-]?\d+$")
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


class _Bad(ValueError):
    """A value that does not fit its type; the message says what was expected."""


def _describe(value: Any) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return repr(shown)
    return {bool: "a boolean", dict: "an object", list: "an array", type(None): "null"}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


def _string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _Bad(f"expected a string, got {_describe(value)}")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise _Bad(f"expected an integer, got {_describe(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.match(value.strip()):
        return int(value.strip())
    raise _Bad(f"expected an integer, got {_describe(value)}")


def _number(value: Any) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number: int | float = value
    elif isinstance(value, str) and _INTEGER.match(value.strip()):
        number = int(value.strip())
    else:
        try:
            number = float(value.strip()) if isinstance(value, str) else math.nan
        except ValueError:
            number = math.nan
    if isinstance(number, float) and not math.isfinite(number):
        raise _Bad(f"expected a number, got {_describe(value)}")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise _Bad(f"expected a boolean (true/false, yes/no, 1/0), got {_describe(value)}")


def _date(value: Any) -> str:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise _Bad(f"expected a date (YYYY-MM-DD), got {_describe(value)}")


def _datetime(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise _Bad(f"expected an ISO 8601 date and time, got {_describe(value)}")


def _json(value: Any, kind: type, noun: str) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise _Bad(f"expected {noun} (or its JSON), got invalid JSON: {exc}") from None
    if isinstance(value, tuple) and kind is list:
        value = list(value)
    if not isinstance(value, kind):
        raise _Bad(f"expected {noun}, got {_describe(value)}")
    return value


_COERCE: dict[str, Callable[[Any], Any]] = {
    "string": _string,
    "text": _string,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "date": _date,
    "datetime": _datetime,
    "object": lambda v: _json(v, dict, "an object"),
    "array": lambda v: _json(v, list, "an array"),
}


class _Coercer:
    """Coerces one value of one field; knows the workspace's connections."""

    def __init__(
        self,
        connections: Mapping[str, Mapping[str, Any]] | None,
        connection_types: Mapping[str, Any] | None,
    ) -> None:
        self.connections = connections or {}
        self.connection_types = connection_types or {}

    def one(self, spec: InputField, value: Any) -> Any:
        coerce = _COERCE.get(spec.type)
        if coerce is not None:
            result = coerce(value)
        else:
            result = self.connection(spec.type, value)
        self.check_limits(spec, result)
        return result

    def connection(self, type_name: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            # Properties given directly (or an input coerced before).
            schema = self.connection_types.get(type_name)
            if schema is None:
                return dict(value)
            try:
                return coerce_input(schema, value)
            except InputInvalid as exc:
                raise _Bad("; ".join(f"{i.path}: {i.message}" for i in exc.issues)) from None
        if self.connection_types and type_name not in self.connection_types:
            raise _Bad(f"unknown input type '{type_name}'")
        if not isinstance(value, str):
            raise _Bad(f"expected the name of a '{type_name}' connection, got {_describe(value)}")
        found = self.connections.get(value)
        if found is None:
            names = sorted(self.connections)
            hint = did_you_mean(value, names)
            raise _Bad(f"unknown connection '{value}'" + (f" ({hint})" if hint else ""))
        return dict(found)

    def check_limits(self, spec: InputField, value: Any) -> None:
        if spec.pattern is not None and isinstance(value, str):
            if re.search(spec.pattern, value) is None:
                raise _Bad(f"{_describe(value)} does not match the pattern '{spec.pattern}'")
        if spec.min is None and spec.max is None:
            return
        if isinstance(value, int | float) and not isinstance(value, bool):
            measured, what = value, "value"
        elif isinstance(value, str | list):
            measured, what = len(value), "length"
        else:
            return
        if spec.min is not None and measured < spec.min:
            raise _Bad(f"{what} {measured} is less than the minimum {_num(spec.min)}")
        if spec.max is not None and measured > spec.max:
            raise _Bad(f"{what} {measured} is more than the maximum {_num(spec.max)}")

    def field(self, spec: InputField, value: Any) -> Any:
        if spec.multiple:
            items = value if isinstance(value, list) else [value]
            result = [self.one(spec, item) for item in items]
        else:
            result = self.one(spec, value)
        if spec.options is not None:
            allowed = [self._option(spec, o) for o in spec.options]
            for item in result if spec.multiple else [result]:
                if item not in allowed:
                    shown = ", ".join(repr(o) for o in spec.options)
                    raise _Bad(f"{_describe(item)} is not one of the options: {shown}")
        return result

    def _option(self, spec: InputField, option: Any) -> Any:
        try:
            return self.one(spec.model_copy(update={"min": None, "max": None, "pattern": None}),
                            option)
        except _Bad:
            return option


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def coerce_input(
    schema: Mapping[str, InputField],
    raw: Mapping[str, Any] | None,
    *,
    secrets: Mapping[str, Any] | None = None,
    connections: Mapping[str, Mapping[str, Any]] | None = None,
    connection_types: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate and coerce `raw` against `schema`; raise `InputInvalid` naming every bad
    field.

    Missing optional fields without a default are present as None. A templated default
    (`default: "<< secret.TOKEN >>"`) is rendered with `secret` and the given `input` in
    its context, then coerced like a given value.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InputInvalid(issues=[Issue(message=f"input must be an object, got {_describe(raw)}")])
    coercer = _Coercer(connections, connection_types)
    issues: list[Issue] = []
    for key in raw:
        if key not in schema:
            known = ", ".join(schema) or "none"
            hint = did_you_mean(str(key), schema) or f"known fields: {known}"
            issues.append(Issue(message=f"unknown input field '{key}'", path=str(key), hint=hint))
    result: dict[str, Any] = {}
    defaults: list[str] = []
    for name, spec in schema.items():
        value = raw.get(name)
        if value is None:
            defaults.append(name)
            continue
        try:
            result[name] = coercer.field(spec, value)
        except _Bad as exc:
            issues.append(Issue(message=str(exc), path=name))
    for name in defaults:
        spec = schema[name]
        if spec.default is None:
            result[name] = None
            if spec.required:
                issues.append(Issue(message=f"'{name}' is required", path=name))
            continue
        try:
            default = spec.default
            if has_template(default):
                context = build_context(input=dict(result), secret=secrets or {})
                default = render_value(default, context, where=f"input.{name}.default")
            result[name] = coercer.field(spec, default)
        except RenderError as exc:
            issues.append(Issue(message=f"default cannot be rendered: {exc}", path=name))
        except _Bad as exc:
            issues.append(Issue(message=f"default is invalid: {exc}", path=name))
    if issues:
        raise InputInvalid(issues=issues)
    return result


def coerce_cli_value(field: InputField, text: str, *, name: str = "") -> Any:
    """Parse a command-line `KEY=VALUE` text by the field's type (objects and arrays as
    JSON; for a `multiple` field a JSON array, or one value)."""
    try:
        if field.multiple and text.lstrip().startswith("["):
            items = _json(text, list, "an array")
            return [_Coercer(None, None).one(field, item) if field.type in _COERCE else item
                    for item in items]
        if field.type not in _COERCE:
            return text  # a connection name, resolved by coerce_input
        value = _Coercer(None, None).one(field, text)
        return [value] if field.multiple else value
    except _Bad as exc:
        raise InputInvalid(issues=[Issue(message=str(exc), path=name)]) from None


def secret_paths(schema: Mapping[str, InputField]) -> tuple[str, ...]:
    """Names of the fields marked `secret: true` (their values are redacted in logs)."""
    return tuple(name for name, spec in schema.items() if spec.secret)
