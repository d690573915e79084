from __future__ import annotations

import orjson

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
