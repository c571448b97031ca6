"""The pure consumption model: register deltas with rollover, the plausibility check that sends
readings to quarantine, and consumption between two readings (CT × PT, band registers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from meterdesk.metering.model import (
    BANDS,
    MeterProfile,
    QuarantineReason,
    Reading,
    ReadingSource,
    Utility,
    bands_from_mapping,
    check_step,
    consumption_between,
    order_key,
    register_delta,
)
from meterdesk.shared.errors import ValidationError

D = Decimal
T0 = datetime(2026, 11, 2, tzinfo=UTC)


def profile(
    *,
    modulus: str = "10000",
    max_rate: str = "500",
    ct: str = "1",
    pt: str = "1",
    band_registers: bool = False,
) -> MeterProfile:
    return MeterProfile(
        meter_id=1,
        organisation_id=1,
        site_id=1,
        utility=Utility.ELECTRICITY,
        ct_ratio=D(ct),
        pt_ratio=D(pt),
        modulus=D(modulus),
        max_rate_per_hour=D(max_rate),
        has_band_registers=band_registers,
        generation=0,
    )


def reading(
    minutes: float, total: str, bands: tuple[str, ...] | None = None, generation: int = 0
) -> Reading:
    return Reading(
        meter_id=1,
        generation=generation,
        measured_at=T0 + timedelta(minutes=minutes),
        total=D(total),
        bands=None if bands is None else tuple(D(b) for b in bands),
    )


# --- register deltas ---------------------------------------------------------------------------


def test_register_delta_is_the_plain_difference_when_the_register_went_up() -> None:
    assert register_delta(D("120.5"), D("130.25"), D("10000")) == D("9.75")


def test_register_delta_wraps_at_the_modulus_when_the_register_went_down() -> None:
    assert register_delta(D("9999.5"), D("0.75"), D("10000")) == D("1.25")


def test_an_unchanged_register_has_no_delta() -> None:
    assert register_delta(D("42"), D("42"), D("10000")) == 0


# --- plausibility ------------------------------------------------------------------------------


def test_a_normal_advance_is_accepted() -> None:
    verdict = check_step(profile(), reading(0, "100"), reading(60, "150"))
    assert verdict.ok
    assert verdict.reason_code is None


def test_rollover_counts_as_consumption_not_negative_usage() -> None:
    meter = profile(modulus="10000")
    earlier, later = reading(0, "9990"), reading(60, "15")

    assert check_step(meter, earlier, later).ok
    assert consumption_between(meter, earlier, later).total == D("25")


def test_a_decrease_that_is_no_plausible_rollover_is_quarantined_as_decreased() -> None:
    verdict = check_step(profile(modulus="1000000"), reading(0, "1000"), reading(60, "999.9"))

    assert not verdict.ok
    assert verdict.reason_code is QuarantineReason.DECREASED
    assert "went down from 1000 to 999.9" in verdict.reason


def test_an_advance_beyond_the_meters_maximum_rate_is_quarantined_as_a_jump() -> None:
    # 500 kWh/h for 30 minutes allows 250 kWh; 250.0001 is one step too far.
    meter = profile(max_rate="500")
    assert check_step(meter, reading(0, "0"), reading(30, "250")).ok

    verdict = check_step(meter, reading(0, "0"), reading(30, "250.0001"))
    assert verdict.reason_code is QuarantineReason.JUMP
    assert "exceeds the meter's maximum of 500 per hour" in verdict.reason


def test_the_jump_limit_is_in_primary_units_so_a_ct_ratio_lowers_the_register_limit() -> None:
    # CT 50: 500 kWh/h primary is 10 register units per hour.
    meter = profile(max_rate="500", ct="50")
    assert check_step(meter, reading(0, "0"), reading(60, "10")).ok
    assert check_step(meter, reading(0, "0"), reading(60, "10.0001")).reason_code == (
        QuarantineReason.JUMP
    )


def test_readings_seconds_apart_are_judged_against_at_least_one_minute_of_use() -> None:
    # 600 kWh/h → 10 kWh per minute, even for readings one second apart.
    meter = profile(max_rate="600")
    assert check_step(meter, reading(0, "0"), reading(1 / 60, "10")).ok
    assert not check_step(meter, reading(0, "0"), reading(1 / 60, "10.0001")).ok


def test_band_registers_that_disagree_with_the_total_are_quarantined() -> None:
    earlier = reading(0, "100", ("0", "10", "40", "50", "0"))
    agreeing = reading(60, "110", ("0", "12", "44", "54", "0"))
    disagreeing = reading(60, "110", ("0", "12", "44", "60", "0"))

    assert check_step(profile(), earlier, agreeing).ok
    verdict = check_step(profile(), earlier, disagreeing)
    assert verdict.reason_code is QuarantineReason.BANDS_DISAGREE
    assert "advanced 16" in verdict.reason


def test_band_registers_may_differ_from_the_total_by_the_last_digits() -> None:
    earlier = reading(0, "100", ("0", "0", "40", "60", "0"))
    later = reading(60, "110", ("0", "0", "45.03", "65", "0"))  # 10.03 vs 10: within 0.05
    assert check_step(profile(), earlier, later).ok


# --- consumption -------------------------------------------------------------------------------


def test_consumption_multiplies_the_register_advance_by_ct_and_pt() -> None:
    meter = profile(ct="40", pt="100")
    used = consumption_between(meter, reading(0, "1.25"), reading(60, "1.5"))

    assert used.total == D("1000")  # 0.25 × 40 × 100
    assert used.by_band is None
    assert (used.start, used.end) == (T0, T0 + timedelta(hours=1))


def test_a_meter_with_band_registers_is_billed_from_its_own_registers() -> None:
    meter = profile(band_registers=True, ct="2")
    earlier = reading(0, "100", ("0", "10", "40", "50", "0"))
    later = reading(60, "110", ("0", "12", "44", "54", "0"))

    used = consumption_between(meter, earlier, later)

    assert used.by_band == {"peak": D("4"), "flat": D("8"), "valley": D("8")}
    assert used.total == D("20")


def test_band_registers_roll_over_one_by_one() -> None:
    meter = profile(band_registers=True, modulus="100")
    earlier = reading(0, "95", ("0", "0", "99", "96", "0"))
    later = reading(60, "5", ("0", "0", "3", "97", "0"))

    assert consumption_between(meter, earlier, later).by_band == {"flat": D("4"), "valley": D("1")}


def test_a_meter_without_band_registers_ignores_bands_sent_anyway() -> None:
    earlier = reading(0, "100", ("0", "10", "40", "50", "0"))
    later = reading(60, "110", ("0", "12", "44", "54", "0"))
    assert consumption_between(profile(), earlier, later).by_band is None


def test_bands_from_a_mapping_come_in_band_order_with_missing_bands_zero() -> None:
    assert bands_from_mapping({"valley": D("3"), "peak": D("1")}) == (
        D(0),
        D(1),
        D(0),
        D(3),
        D(0),
    )
    assert bands_from_mapping(None) is None
    assert bands_from_mapping({}) is None
    assert len(BANDS) == 5


def test_an_unknown_band_name_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown band"):
        bands_from_mapping({"midday": D("1")})


def test_readings_are_ordered_by_time_then_generation_and_compared_by_values() -> None:
    old_final = reading(30, "1012", generation=0)
    new_initial = reading(30, "3", generation=1)

    assert order_key(old_final) < order_key(new_initial)
    assert not old_final.same_values(new_initial)
    assert reading(30, "3").same_values(Reading(1, 0, T0, D("3.0000"), source=ReadingSource.IMPORT))
