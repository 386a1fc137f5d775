"""`broker_core.messages`: the wire shapes' conversions."""

from __future__ import annotations

import datetime as dt

from broker_core.messages import from_timestamp


def test_a_timestamp_becomes_an_aware_utc_datetime() -> None:
    """A stored Unix timestamp shows as the same instant, in UTC."""
    assert from_timestamp(0.0) == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def test_an_instant_past_year_9999_shows_as_the_last_one() -> None:
    """A timestamp no datetime can hold (a delay of millennia) shows as datetime.max, in UTC."""
    assert from_timestamp(1e15) == dt.datetime.max.replace(tzinfo=dt.UTC)
