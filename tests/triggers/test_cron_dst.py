"""Cron fire times across daylight-saving changes (Europe/Oslo, 2026)."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

from engine.cron import fire_times, latest_fire_time, next_runs

OSLO = ZoneInfo("Europe/Oslo")


def _local(stamps: list[float]) -> list[str]:
    return [datetime.fromtimestamp(t, OSLO).isoformat() for t in stamps]


def test_spring_forward_runs_a_skipped_time_once_at_the_first_valid_time() -> None:
    # 2026-03-29: 02:00 jumps to 03:00, so 02:30 does not exist that day.
    start = datetime(2026, 3, 28, 12, tzinfo=OSLO).timestamp()
    runs = _local(fire_times("30 2 * * *", "Europe/Oslo", start, start + 3 * 86400))
    assert runs == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00",
                    "2026-03-31T02:30:00+02:00"]


def test_spring_forward_day_has_23_hourly_runs() -> None:
    day = datetime(2026, 3, 29, tzinfo=OSLO).timestamp()
    nxt = datetime(2026, 3, 30, tzinfo=OSLO).timestamp()
    assert len(fire_times("0 * * * *", "Europe/Oslo", day - 1, nxt - 1)) == 23


def test_fall_back_runs_a_fixed_time_once() -> None:
    # 2026-10-25: 03:00 falls back to 02:00, so 02:30 happens twice; a daily job runs once.
    start = datetime(2026, 10, 24, 12, tzinfo=OSLO).timestamp()
    runs = _local(fire_times("30 2 * * *", "Europe/Oslo", start, start + 3 * 86400))
    assert runs == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00",
                    "2026-10-27T02:30:00+01:00"]
    shown = [t.isoformat() for t in next_runs("30 2 * * *", "Europe/Oslo", count=2,
                                              after=datetime(2026, 10, 24, 12, tzinfo=OSLO))]
    assert shown == runs[:2]


def test_fall_back_day_has_25_hourly_runs_and_every_real_half_hour() -> None:
    day = datetime(2026, 10, 25, tzinfo=OSLO).timestamp()
    nxt = datetime(2026, 10, 26, tzinfo=OSLO).timestamp()
    hourly = fire_times("0 * * * *", "Europe/Oslo", day - 1, nxt - 1)
    assert len(hourly) == 25
    assert all(b - a == 3600 for a, b in itertools.pairwise(hourly))
    halves = fire_times("0 */30 2 * * *", "Europe/Oslo", day, nxt)  # 6 fields, seconds first
    assert _local(halves) == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:30:00+02:00"]


def test_latest_fire_time_skips_the_repeated_wall_time() -> None:
    second = datetime(2026, 10, 25, 2, 45, tzinfo=OSLO).replace(fold=1).timestamp()
    first_run = datetime(2026, 10, 25, 2, 30, tzinfo=OSLO).timestamp()
    assert latest_fire_time("30 2 * * *", "Europe/Oslo", second) == first_run


def test_six_field_expressions_have_seconds_first() -> None:
    assert fire_times("*/2 * * * * *", "UTC", 1000.0, 1006.0) == [1002.0, 1004.0, 1006.0]
