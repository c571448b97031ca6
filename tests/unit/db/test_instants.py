"""Stored instants are integer microseconds since the epoch (``db.types``): an instant and its
integer convert both ways without loss, as ``timedelta(microseconds=…)`` did before
``int_instant`` multiplied a one-microsecond timedelta instead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from meterdesk.db.types import instant_int, int_instant

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# every instant a datetime can hold, in microseconds from the epoch
STORED = st.integers(
    min_value=instant_int(datetime.min.replace(tzinfo=UTC)),
    max_value=instant_int(datetime.max.replace(tzinfo=UTC)),
)


@given(STORED)
def test_an_integer_instant_converts_back_exactly(value: int) -> None:
    at = int_instant(value)
    assert at == EPOCH + timedelta(microseconds=value)
    assert at.tzinfo is UTC
    assert instant_int(at) == value


@given(st.datetimes(timezones=st.just(UTC)))
def test_an_instant_converts_to_its_integer_and_back(at: datetime) -> None:
    assert int_instant(instant_int(at)) == at
