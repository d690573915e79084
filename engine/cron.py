"""Cron expressions: validation and the next fire times of a scheduler trigger.

A cron expression has 5 fields (minute hour day month weekday) or 6 with seconds first
(`0 0 2 * * *`, as in the Strøm reference). Times are computed in the trigger's IANA
timezone, so a daily 02:30 stays 02:30 local time across daylight-saving changes, and are
returned as aware datetimes (ISO 8601 with the zone's offset when formatted).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from engine.errors import ValidationFailed


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
    try:
        return croniter(" ".join(fields), start, ret_type=datetime,
                        second_at_beginning=len(fields) == 6)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise ValidationFailed(f"invalid cron expression {expr!r}: {exc}") from None


def validate_cron(expr: str, timezone: str = "UTC") -> None:
    """Raise `ValidationFailed` when `expr` or `timezone` is not usable."""
    _iterator(expr, datetime.now(_zone(timezone)))


def next_runs(
    expr: str, timezone: str = "UTC", *, count: int = 5, after: datetime | None = None
) -> list[datetime]:
    """The next `count` fire times strictly after `after` (default: now), in `timezone`."""
    zone = _zone(timezone)
    start = (after or datetime.now(UTC)).astimezone(zone)
    it = _iterator(expr, start)
    out: list[datetime] = []
    try:
        for _ in range(count):
            value = it.get_next(datetime)
            out.append(value if value.tzinfo else value.replace(tzinfo=zone))
    except CroniterBadDateError:
        pass  # an expression that never fires again (e.g. Feb 30th) has no next runs
    return out


def next_runs_iso(expr: str, timezone: str = "UTC", *, count: int = 5,
                  after: datetime | None = None) -> list[str]:
    """`next_runs` formatted as ISO 8601 strings with the zone's offset."""
    return [t.isoformat() for t in next_runs(expr, timezone, count=count, after=after)]
