"""The one-line fast path gives exactly what the full pricer gives, or steps aside."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from hypothesis import event, given, settings
from hypothesis import strategies as st
from test_tariff_properties import ZONES, amounts, tariffs

from meterdesk.tariffs.definition import tariff_from_dict
from meterdesk.tariffs.model import Tariff
from meterdesk.tariffs.pricing import Usage, price_usage
from meterdesk.tariffs.pricing_fast import price_single_line

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def short_windows(draw: st.DrawFn) -> tuple[datetime, datetime]:
    """Mostly reading-sized windows (minutes), some long ones, some on the hour."""
    start = EPOCH + timedelta(minutes=draw(st.integers(-60 * 24 * 40, 60 * 24 * 400)))
    start += timedelta(microseconds=draw(st.sampled_from([0, 0, 1, 999_999])))
    length = draw(
        st.sampled_from([timedelta(minutes=15), timedelta(hours=1), timedelta(minutes=1)])
        | st.integers(1, 3 * 86400 * 10**6).map(lambda us: timedelta(microseconds=us))
    )
    return start, start + length


quantities = amounts.filter(bool) | st.sampled_from(
    [Decimal("1.23450000"), Decimal("0.0000001"), Decimal("12.5"), Decimal("1E+2")]
)


@settings(max_examples=400, deadline=None)
@given(tariffs(), short_windows(), quantities, st.sampled_from(ZONES), amounts)
def test_single_line_is_the_full_pricers_only_line_or_none(
    tariff: Tariff,
    window: tuple[datetime, datetime],
    quantity: Decimal,
    tz: ZoneInfo,
    used: Decimal,
) -> None:
    start, end = window
    month = start.astimezone(tz)
    tier_used = {f"{month:%Y-%m}": used, f"{month:%Y}": used}
    single = price_single_line(start, end, quantity, tariff, tz, tier_used)
    event("fast path" if single is not None else "full pricer")
    if single is None:
        return
    lines = price_usage(Usage(start, end, quantity), tariff, tz, tier_used)
    assert len(lines) == 1
    line = lines[0]
    assert (line.start, line.end) == (start, end)
    assert single == (
        line.band,
        line.quantity,
        line.unit_price,
        line.cost,
        line.tier_block,
        line.tier_key,
        line.period_key,
        line.version_from,
    )
    assert str(single.cost) == str(line.cost)  # the very same digits are stored


def test_steps_aside_for_more_than_six_places_and_for_local_instants() -> None:
    tariff = tariff_from_dict(
        {
            "utility": "water",
            "versions": [{"effective_from": "2026-01-01", "prices": {"flat": "3"}}],
        }
    )
    start = datetime(2026, 3, 1, 1, 0, tzinfo=UTC)
    end = start + timedelta(minutes=15)
    shanghai = ZoneInfo("Asia/Shanghai")
    assert price_single_line(start, end, Decimal("0.0000001"), tariff, shanghai, {}) is None
    local = start.astimezone(shanghai)
    assert price_single_line(local, end, Decimal(1), tariff, shanghai, {}) is None
    single = price_single_line(start, end, Decimal("1.50000000"), tariff, shanghai, {})
    assert single is not None
    assert single.cost == Decimal("4.5")
