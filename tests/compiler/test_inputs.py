"""Tests of engine.compiler.inputs: validation and coercion of job input."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from engine.compiler.inputs import coerce_cli_value, coerce_input, secret_paths
from engine.errors import InputInvalid
from engine.model import InputField


def schema(**fields: dict[str, Any]) -> dict[str, InputField]:
    return {name: InputField(**spec) for name, spec in fields.items()}


def bad(schema_: dict[str, InputField], raw: dict[str, Any], **kw: Any) -> dict[str, str]:
    """The issues of an input that must be refused, as {path: message}."""
    with pytest.raises(InputInvalid) as raised:
        coerce_input(schema_, raw, **kw)
    return {i.path: i.message for i in raised.value.issues}


@pytest.mark.parametrize(
    ("type_", "given", "expected"),
    [
        ("string", "abc", "abc"),
        ("string", 5, "5"),
        ("text", "line\nline", "line\nline"),
        ("integer", 5, 5),
        ("integer", "5", 5),
        ("integer", " -7 ", -7),
        ("integer", 5.0, 5),
        ("number", "5.5", 5.5),
        ("number", "5", 5),
        ("number", 2, 2),
        ("boolean", True, True),
        ("boolean", "true", True),
        ("boolean", "no", False),
        ("boolean", "YES", True),
        ("boolean", "0", False),
        ("boolean", 1, True),
        ("date", "2024-02-29", "2024-02-29"),
        ("date", dt.date(2024, 1, 2), "2024-01-02"),
        ("datetime", "2024-01-02T03:04:05Z", "2024-01-02T03:04:05+00:00"),
        ("datetime", "2024-01-02T03:04:05", "2024-01-02T03:04:05"),
        ("object", {"a": 1}, {"a": 1}),
        ("object", '{"a": [1]}', {"a": [1]}),
        ("array", [1, "x"], [1, "x"]),
        ("array", "[1, 2]", [1, 2]),
    ],
)
def test_coercion(type_: str, given: Any, expected: Any) -> None:
    got = coerce_input(schema(v={"type": type_}), {"v": given})
    assert got == {"v": expected}
    assert type(got["v"]) is type(expected)


@pytest.mark.parametrize(
    ("type_", "given", "message"),
    [
        ("string", True, "expected a string, got a boolean"),
        ("string", {"a": 1}, "expected a string, got an object"),
        ("integer", "5.5", "expected an integer, got '5.5'"),
        ("integer", True, "expected an integer, got a boolean"),
        ("integer", 5.5, "expected an integer, got float 5.5"),
        ("number", "abc", "expected a number, got 'abc'"),
        ("number", "nan", "expected a number, got 'nan'"),
        ("boolean", "maybe", "expected a boolean (true/false, yes/no, 1/0), got 'maybe'"),
        ("boolean", 2, "expected a boolean (true/false, yes/no, 1/0), got int 2"),
        ("date", "2024-02-30", "expected a date (YYYY-MM-DD), got '2024-02-30'"),
        ("datetime", "yesterday", "expected an ISO 8601 date and time, got 'yesterday'"),
        ("object", "[1]", "expected an object, got an array"),
        ("object", "{oops", "expected an object (or its JSON), got invalid JSON: "
         "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ("array", {"a": 1}, "expected an array, got an object"),
    ],
)
def test_bad_values(type_: str, given: Any, message: str) -> None:
    assert bad(schema(v={"type": type_}), {"v": given}) == {"v": message}


def test_every_bad_field_is_reported_together() -> None:
    fields = schema(
        name={"type": "string", "required": True},
        count={"type": "integer"},
        ratio={"type": "number", "min": 0, "max": 1},
        env={"type": "string", "options": ["dev", "prod"]},
        tag={"type": "string", "pattern": "v[0-9]+"},
    )
    issues = bad(fields, {"count": "x", "ratio": 2, "env": "qa", "tag": "1.0", "extra": 1})
    assert issues == {
        "name": "'name' is required",
        "count": "expected an integer, got 'x'",
        "ratio": "value 2 is more than the maximum 1",
        "env": "'qa' is not one of the options: 'dev', 'prod'",
        "tag": "'1.0' does not match the pattern 'v[0-9]+'",
        "extra": "unknown input field 'extra'",
    }


def test_unknown_field_hint() -> None:
    with pytest.raises(InputInvalid) as raised:
        coerce_input(schema(version={}), {"verison": "1"})
    (issue,) = raised.value.issues
    assert issue.hint == "did you mean 'version'?"
    assert "verison" in str(raised.value)


def test_missing_optional_fields_are_none_and_defaults_apply() -> None:
    fields = schema(
        a={"type": "string"},
        b={"type": "integer", "default": "7"},
        c={"type": "boolean", "default": False},
    )
    assert coerce_input(fields, None) == {"a": None, "b": 7, "c": False}
    assert coerce_input(fields, {"a": None, "c": "yes"}) == {"a": None, "b": 7, "c": True}


def test_templated_default_uses_secret_and_input() -> None:
    fields = schema(
        user={"type": "string", "default": "ada"},
        token={"type": "string", "default": "<< secret.TOKEN >>", "secret": True},
        url={"type": "string", "default": "https://x/<< input.user >>"},
        port={"type": "integer", "default": "<< secret.PORT >>"},
    )
    got = coerce_input(fields, {"user": "bob"}, secrets={"TOKEN": "t-1", "PORT": "8080"})
    assert got == {"user": "bob", "token": "t-1", "url": "https://x/bob", "port": 8080}
    issues = bad(fields, {}, secrets={})
    assert set(issues) == {"token", "port"}
    assert issues["token"].startswith("default cannot be rendered:")
    assert "TOKEN" in issues["token"]


def test_options_compare_after_coercion() -> None:
    fields = schema(level={"type": "integer", "options": [1, 2, 3]})
    assert coerce_input(fields, {"level": "2"}) == {"level": 2}
    assert bad(fields, {"level": 4}) == {"level": "int 4 is not one of the options: 1, 2, 3"}


def test_multiple_wraps_single_values_and_checks_each() -> None:
    fields = schema(ids={"type": "integer", "multiple": True, "options": [1, 2, 3]})
    assert coerce_input(fields, {"ids": ["1", 2]}) == {"ids": [1, 2]}
    assert coerce_input(fields, {"ids": "3"}) == {"ids": [3]}
    assert bad(fields, {"ids": [1, "x"]}) == {"ids": "expected an integer, got 'x'"}


def test_min_and_max_measure_length_of_strings_and_arrays() -> None:
    fields = schema(name={"type": "string", "min": 2, "max": 4}, items={"type": "array", "min": 1})
    assert coerce_input(fields, {"name": "abcd", "items": [0]}) == {"name": "abcd", "items": [0]}
    assert bad(fields, {"name": "a", "items": []}) == {
        "name": "length 1 is less than the minimum 2",
        "items": "length 0 is less than the minimum 1",
    }


def test_connection_type_resolves_to_properties() -> None:
    fields = schema(db={"type": "postgres", "required": True})
    connections = {"main": {"host": "db", "port": 5432}}
    types = {"postgres": schema(host={"required": True}, port={"type": "integer"})}
    got = coerce_input(fields, {"db": "main"}, connections=connections, connection_types=types)
    assert got == {"db": {"host": "db", "port": 5432}}
    issues = bad(fields, {"db": "mian"}, connections=connections, connection_types=types)
    assert issues == {"db": "unknown connection 'mian' (did you mean 'main'?)"}
    # Properties may be given directly; they are checked against the connection type.
    direct = coerce_input(fields, {"db": {"host": "h", "port": "1"}}, connection_types=types)
    assert direct == {"db": {"host": "h", "port": 1}}
    assert bad(fields, {"db": {"port": 1}}, connection_types=types) == {
        "db": "host: 'host' is required"
    }


def test_input_must_be_a_mapping() -> None:
    with pytest.raises(InputInvalid) as raised:
        coerce_input(schema(a={}), ["a"])  # type: ignore[arg-type]
    assert raised.value.issues[0].message == "input must be an object, got an array"


def test_cli_values() -> None:
    assert coerce_cli_value(InputField(type="integer"), "42") == 42
    assert coerce_cli_value(InputField(type="boolean"), "yes") is True
    assert coerce_cli_value(InputField(type="string"), "[x]") == "[x]"
    assert coerce_cli_value(InputField(type="object"), '{"a": 1}') == {"a": 1}
    assert coerce_cli_value(InputField(type="array"), "[1, 2]") == [1, 2]
    assert coerce_cli_value(InputField(type="integer", multiple=True), "[1, 2]") == [1, 2]
    assert coerce_cli_value(InputField(type="string", multiple=True), "a") == ["a"]
    assert coerce_cli_value(InputField(type="postgres"), "main") == "main"
    with pytest.raises(InputInvalid) as raised:
        coerce_cli_value(InputField(type="integer"), "4.5", name="count")
    assert [(i.path, i.message) for i in raised.value.issues] == [
        ("count", "expected an integer, got '4.5'")
    ]


def test_secret_paths() -> None:
    fields = schema(a={}, token={"secret": True}, password={"secret": True})
    assert secret_paths(fields) == ("token", "password")
