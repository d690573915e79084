from __future__ import annotations

from datetime import UTC, datetime

import orjson
from hypothesis import given
from hypothesis import strategies as st

from engine.logs.model import LogLine, format_ts, parse_ts


def test_to_json_is_the_reference_object_in_order() -> None:
    line = LogLine(ts=0.5, stream="stdout", step="say-hello", line='Hello "World"')
    assert line.to_json() == (
        b'{"ts":"1970-01-01T00:00:00.500000Z","stream":"stdout",'
        b'"step":"say-hello","line":"Hello \\"World\\""}'
    )


def test_round_trip_keeps_microseconds_and_unicode() -> None:
    line = LogLine(ts=1_700_000_000.123456, stream="stderr", step="a[0]", line="ø\nx")
    back = LogLine.from_json(line.to_json(), seq=7)
    assert back.seq == 7
    assert back.line == "ø\nx" and back.step == "a[0]" and back.stream == "stderr"
    assert abs(back.ts - line.ts) < 1e-6
    assert b"\n" not in line.to_json()


def test_timestamps() -> None:
    assert format_ts(1_700_000_000.0) == "2023-11-14T22:13:20.000000Z"
    assert parse_ts("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert parse_ts("2023-11-14T23:13:20+01:00") == 1_700_000_000.0
    assert set(orjson.loads(LogLine(1.0, "stdout", "s", "x").to_json())) == {
        "ts", "stream", "step", "line"}


@given(st.one_of(
    st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
    st.integers(min_value=0, max_value=4_102_444_800).map(lambda s: s + 0.9999995),
    st.integers(min_value=0, max_value=4_102_444_800).map(lambda s: s + 0.0000005),
    st.floats(min_value=-1e9, max_value=-1e-6, allow_nan=False),
))
def test_format_ts_is_what_datetime_gives(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert format_ts(ts) == expected
    assert format_ts(ts) == expected  # the second's text kept from the call before
