"""Pure rules of platform billing.

Invariants:
- Readings of a meter form one sequence in measurement-time order; a new reading is checked
  against the accepted reading before it and the accepted reading after it, so a late reading is
  placed where it belongs and judged by its true neighbours.
- Consumption intervals are the pairs of consecutive accepted readings of one generation; when a
  late reading lands inside an interval, that interval and every later one are priced again, so
  the result is the same as if the readings had arrived in order.
- Running-total rounding: for each meter, account and billing month the ledger holds exactly
  ``round(exact cost so far)``; each posting is that minus what was already posted. Many small
  deductions therefore add up to the rounded month total, to the fen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from meterdesk.metering.model import (
    ACCEPT,
    MeterProfile,
    QuarantineReason,
    Reading,
    ReadingSource,
    Verdict,
    check_step,
    order_key,
)
from meterdesk.shared.money import QUANTITY_PLACES, round_fen


class BillingMode(StrEnum):
    PLATFORM = "platform"  # 后台计费: the platform prices readings and deducts
    METER = "meter"  # 表端计费: the meter deducts by its own price table; the platform mirrors


class AccountStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class Merge:
    """Outcome of placing a batch's readings of one meter among its accepted readings."""

    sequence: list[Reading]  # accepted readings from the repricing start to the end, in order
    accepted: list[Reading] = field(default_factory=list)
    rejected: list[tuple[Reading, Verdict]] = field(default_factory=list)
    duplicates: int = 0
    reprice_from: int | None = None  # index in sequence of the first interval start to price
    late: bool = False  # a new reading landed before an already accepted one


def merge_readings(
    profile: MeterProfile, existing: Sequence[Reading], candidates: Sequence[Reading]
) -> Merge:
    """Place ``candidates`` (sorted, unique keys) among ``existing`` (sorted, accepted)."""
    if candidates and (not existing or order_key(candidates[0]) > order_key(existing[-1])):
        return _append(profile, existing, candidates)
    return _walk(profile, existing, candidates)


def _walk(
    profile: MeterProfile, existing: Sequence[Reading], candidates: Sequence[Reading]
) -> Merge:
    """The general case: candidates among, before and after accepted readings."""
    merge = Merge(sequence=[])
    by_key = {order_key(reading): reading for reading in existing}
    pending = list(existing)
    position = 0
    for candidate in candidates:
        while position < len(pending) and order_key(pending[position]) < order_key(candidate):
            merge.sequence.append(pending[position])
            position += 1
        twin = by_key.get(order_key(candidate))
        if twin is not None:
            _twin(merge, candidate, twin)
            continue
        following = pending[position] if position < len(pending) else None
        if candidate.source is ReadingSource.RELEASED:
            verdict = ACCEPT  # an operator looked at it and accepted it as real
        else:
            verdict = _judge(
                profile, merge.sequence[-1] if merge.sequence else None, candidate, following
            )
        if not verdict.ok:
            merge.rejected.append((candidate, verdict))
            continue
        if merge.reprice_from is None:
            merge.reprice_from = max(0, len(merge.sequence) - 1)
        merge.late = merge.late or following is not None
        merge.sequence.append(candidate)
        merge.accepted.append(candidate)
    merge.sequence.extend(pending[position:])
    return merge


def _append(
    profile: MeterProfile, existing: Sequence[Reading], candidates: Sequence[Reading]
) -> Merge:
    """The common case of :func:`merge_readings`: every candidate comes after every accepted
    reading, so there are no twins and no later neighbours — each is judged against the one
    accepted before it. Same outcome as the general walk, without its bookkeeping."""
    merge = Merge(sequence=list(existing))
    sequence = merge.sequence
    for candidate in candidates:
        if candidate.source is ReadingSource.RELEASED:
            verdict = ACCEPT  # an operator looked at it and accepted it as real
        else:
            verdict = _judge(profile, sequence[-1] if sequence else None, candidate, None)
        if not verdict.ok:
            merge.rejected.append((candidate, verdict))
            continue
        if merge.reprice_from is None:
            merge.reprice_from = max(0, len(sequence) - 1)
        sequence.append(candidate)
        merge.accepted.append(candidate)
    return merge


def _twin(merge: Merge, candidate: Reading, twin: Reading) -> None:
    if candidate.same_values(twin):
        merge.duplicates += 1
    else:
        merge.rejected.append(
            (
                candidate,
                Verdict(
                    False,
                    QuarantineReason.CONFLICTING_DUPLICATE,
                    f"a reading at the same time was already accepted with total {twin.total}",
                ),
            )
        )


def _judge(
    profile: MeterProfile, before: Reading | None, candidate: Reading, after: Reading | None
) -> Verdict:
    if before is not None and before.generation == candidate.generation:
        verdict = check_step(profile, before, candidate)
        if not verdict.ok:
            return verdict
    if after is not None and after.generation == candidate.generation:
        verdict = check_step(profile, candidate, after)
        if not verdict.ok:
            return Verdict(
                False,
                QuarantineReason.INCONSISTENT_WITH_LATER,
                f"does not fit before the accepted reading of {after.measured_at.isoformat()}: {verdict.reason}",
            )
    return ACCEPT


def intervals(sequence: Sequence[Reading], start_index: int) -> list[tuple[Reading, Reading]]:
    """Consecutive pairs of one generation from ``start_index`` on."""
    if len(sequence) - start_index == 2:  # the common case: the cursor and one new reading
        earlier, later = sequence[start_index], sequence[start_index + 1]
        if earlier.generation == later.generation and later.measured_at > earlier.measured_at:
            return [(earlier, later)]
        return []
    pairs = []
    for earlier, later in zip(sequence[start_index:], sequence[start_index + 1 :], strict=False):
        if earlier.generation == later.generation and later.measured_at > earlier.measured_at:
            pairs.append((earlier, later))
    return pairs


@dataclass
class PeriodTotal:
    """A (meter, account, month) running total. The quantity is kept as the integer the
    database stores (millionths of a kWh or m³, a line's six places): its sum is exact and has
    no exponent that could differ between a total read back and one kept in memory."""

    quantity_millionths: int
    exact_cost: Decimal
    posted_fen: int
    postings: int

    @property
    def quantity(self) -> Decimal:
        """The quantity in kWh or m³ (for tiers)."""
        return Decimal(self.quantity_millionths).scaleb(-QUANTITY_PLACES)

    def add(self, quantity_millionths: int, cost: Decimal) -> None:
        self.quantity_millionths += quantity_millionths
        self.exact_cost += cost

    def due_fen(self) -> int:
        """What still has to be posted (negative: to be given back) to reach round(exact)."""
        # round_fen gives whole fen: to_fen's check for a fraction could never fail here, and
        # this runs once per reading.
        return int(round_fen(self.exact_cost).scaleb(2)) - self.posted_fen
