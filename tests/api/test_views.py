"""The JSON shapes of `engine.views`: timestamps as ISO 8601 in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from engine.views import iso


@given(st.one_of(
    st.floats(min_value=-2e9, max_value=4e9, allow_nan=False),
    st.integers(min_value=0, max_value=4_000_000_000),
    st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.9999995),
    st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.0000005),
))
def test_iso_is_what_isoformat_gives(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
    assert iso(ts) == expected


def test_iso_of_whole_seconds_and_none() -> None:
    assert iso(1_700_000_000) == "2023-11-14T22:13:20Z"
    assert iso(1_700_000_000.5) == "2023-11-14T22:13:20.500000Z"
    assert iso(None) is None
