"""Checks every bench run must pass: the reference bill per meter to the fen, and the ledger's
invariants (entries sum to zero, each balance equals the sum of its entries, no reading window
charged twice, every distinct reading stored exactly once, every reference the hot tables keep
without a foreign key resolves)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, text

from meterdesk.bench.workload import Workload
from meterdesk.billing.lines import select_lines
from meterdesk.db.consistency import dangling_references, ledger_differences

if TYPE_CHECKING:
    from meterdesk.bench.setup import Prepared


def check_invariants(
    engine: Engine, workload: Workload, prepared: Prepared, expected: dict[int, int]
) -> dict[str, bool]:
    with engine.connect() as conn:
        books = ledger_differences(conn)
        dangling = dangling_references(conn)
        charged: dict[int, int] = dict(
            conn.execute(
                text(
                    "SELECT meter_id, SUM(CASE WHEN reason = 'deduction' THEN amount_fen "
                    "ELSE -amount_fen END) FROM transfers "
                    "WHERE reason IN ('deduction', 'deduction_correction') GROUP BY meter_id"
                )
            ).all()
        )
        posted: dict[int, int] = dict(
            conn.execute(
                text("SELECT meter_id, SUM(posted_fen) FROM period_totals GROUP BY meter_id")
            ).all()
        )
        stored = conn.execute(text("SELECT COUNT(*) FROM readings")).scalar_one()
        lines = conn.execute(
            select_lines(
                ("meter_id", "interval_start", "interval_end"),
                lambda line: (line["active"].is_(True),),
            ).order_by("meter_id", "interval_start", "interval_end")
        ).all()
    by_id = {prepared.meter_ids[index]: fen for index, fen in expected.items()}
    return {
        "bills_match_reference": all(
            int(charged.get(meter_id, 0)) == fen for meter_id, fen in by_id.items()
        ),
        "period_totals_match_ledger": all(
            int(posted.get(m, 0)) == int(charged.get(m, 0)) for m in by_id
        ),
        "entries_sum_to_zero": books["entries_sum"] == 0,
        "balances_equal_entries": books["balances_off"] == 0,
        "references_resolve": not any(dangling.values()),
        "no_window_charged_twice": _no_overlap(lines),
        "each_reading_stored_once": int(stored) == len(workload.truth) + len(workload.meters),
    }


def _no_overlap(lines: Sequence[Any]) -> bool:
    last: dict[int, tuple[int, int]] = {}
    for meter_id, start, end in lines:
        previous = last.get(meter_id)
        if previous is not None and previous != (start, end) and start < previous[1]:
            return False
        last[meter_id] = (start, end)
    return True
