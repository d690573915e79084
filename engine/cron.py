"""Cron expressions: validation and the next fire times of a scheduler trigger.

A cron expression has 5 fields (minute hour day month weekday) or 6 with seconds first
(`0 0 2 * * *`, as in the Strøm reference). Times are computed in the trigger's IANA
timezone, so a daily 02:30 stays 02:30 local time across daylight-saving changes, and are
returned as aware datetimes (ISO 8601 with the zone's offset when formatted).

Daylight saving follows Vixie cron: a time skipped by spring-forward fires at the first
valid time after it (02:30 on a day that jumps from 02:00 to 03:00 fires at 03:00), and a
time repeated by fall-back fires once, unless the hour field is a wildcard or a step
(`*`, `*/2`), in which case every real occurrence fires (an hourly job runs 25 times).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine.errors import ValidationFailed

if TYPE_CHECKING:
    # croniter (and dateutil) are imported by the first cron expression, not at start.
    from croniter import croniter


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"unknown timezone {timezone!r}") from None


def _iterator(expr: str, start: datetime) -> croniter:
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise ValidationFailed(
            f"invalid cron expression {expr!r}: expected 5 fields, or 6 with seconds first"
        )
    from croniter import CroniterBadCronError, croniter

    try:
        return croniter(" ".join(fields), start, ret_type=datetime,
                        second_at_beginning=len(fields) == 6)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ValidationFailed(f"invalid cron expression {expr!r}: {exc}") from None


def _hour_field(expr: str) -> str:
    fields = expr.split()
    return fields[2] if len(fields) == 6 else fields[1]


def _repeated(value: datetime) -> bool:
    """Whether `value` is the second occurrence of a wall time repeated by fall-back."""
    return value.fold == 1 and value.utcoffset() != value.replace(fold=0).utcoffset()


def _fires(expr: str, value: datetime) -> bool:
    return not (_repeated(value) and "*" not in _hour_field(expr))


def validate_cron(expr: str, timezone: str = "UTC") -> None:
    """Raise `ValidationFailed` when `expr` or `timezone` is not usable."""
    _iterator(expr, datetime.now(_zone(timezone)))


def next_runs(
    expr: str, timezone: str = "UTC", *, count: int = 5, after: datetime | None = None
) -> list[datetime]:
    """The next `count` fire times strictly after `after` (default: now), in `timezone`."""
    from croniter import CroniterBadDateError

    zone = _zone(timezone)
    start = (after or datetime.now(UTC)).astimezone(zone)
    it = _iterator(expr, start)
    out: list[datetime] = []
    try:
        while len(out) < count:
            value = it.get_next(datetime)
            value = value if value.tzinfo else value.replace(tzinfo=zone)
            if _fires(expr, value):
                out.append(value)
    except CroniterBadDateError:
        pass  # an expression that never fires again (e.g. Feb 30th) has no next runs
    return out


def next_runs_iso(expr: str, timezone: str = "UTC", *, count: int = 5,
                  after: datetime | None = None) -> list[str]:
    """`next_runs` formatted as ISO 8601 strings with the zone's offset."""
    return [t.isoformat() for t in next_runs(expr, timezone, count=count, after=after)]


def fire_times(expr: str, timezone: str, after: float, until: float,
               *, limit: int = 1000) -> list[float]:
    """Fire times (epoch seconds) in `(after, until]`, at most `limit`, oldest first."""
    from croniter import CroniterBadDateError

    zone = _zone(timezone)
    it = _iterator(expr, datetime.fromtimestamp(after, zone))
    out: list[float] = []
    try:
        while len(out) < limit:
            value = it.get_next(datetime)
            value = value if value.tzinfo else value.replace(tzinfo=zone)
            stamp = value.timestamp()
            if stamp > until:
                break
            if stamp > after and _fires(expr, value):
                out.append(stamp)
    except CroniterBadDateError:
        pass
    return out


def latest_fire_time(expr: str, timezone: str, at: float) -> float | None:
    """The latest fire time at or before `at` (epoch seconds), or None."""
    from croniter import CroniterBadDateError

    zone = _zone(timezone)
    it = _iterator(expr, datetime.fromtimestamp(at + 1, zone))
    try:
        for _ in range(4):  # a repeated wall time may be skipped; look a little further
            value: datetime = it.get_prev(datetime)
            value = value if value.tzinfo else value.replace(tzinfo=zone)
            if value.timestamp() <= at and _fires(expr, value):
                return value.timestamp()
    except CroniterBadDateError:
        pass
    return None


def next_fire_time(expr: str, timezone: str, after: float) -> float | None:
    """The first fire time strictly after `after` (epoch seconds), or None."""
    found = next_runs(expr, timezone, count=1,
                      after=datetime.fromtimestamp(after, UTC))
    return float(found[0].timestamp()) if found else None
