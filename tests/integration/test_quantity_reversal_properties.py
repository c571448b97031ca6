"""Quantity credit (购量) desk entries undone, as properties (red-team review, sitting 19): any
interleaving of purchases, use, price changes, refunds, refunds reversed (also twice, out of
order, after their lots were taken again, after use ahead), recharges reversed and replays, then
a closing and arrears paid in parts and reversed (also twice, in the middle). After every step:

- the money matches the lots (wallet net of arrears = what the unused quantity cost − what the
  used-ahead quantity was charged + the remainder, within the running total's rounding);
- a refund reversed puts back exactly what that refund took — its quantity, the value of that
  quantity and the carried money — and nothing twice; a recharge reversed takes back exactly
  its own lots at their own prices (the other lots stay as they were, but for the money it
  left carried if a later lot used it), refused once part of them is used or refunded; an
  arrears payment reversed owes again exactly the quantity it bought back;
- a refusal (a second reversal under another key, a refund reversed after use ahead or after the
  closing, a recharge partly spent) and a repeat under the same key change nothing;
- once a closed account owes nothing, no quantity reads as used ahead.

SQLite only, a fresh file per example, as the other quantity harnesses.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
from builders import T0, Setup, check_books, owed, reading, snapshot, wallet
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from test_quantity_credit import quantity_account
from test_quantity_properties import money_matches_lots
from test_quantity_review_properties import FREE_THEN_TIERS

from meterdesk.billing import accounts, cashier, cashier_arrears, cashier_refund, quantity
from meterdesk.billing.ingest import Ingestor
from meterdesk.billing.quantity import QuantityView
from meterdesk.billing.quantity_model import bought, used_of
from meterdesk.billing.tables import quantity_lots
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.ledger.tables import transfers
from meterdesk.shared.errors import ConflictError, InsufficientFundsError, ValidationError
from meterdesk.shared.time import FakeClock
from meterdesk.tariffs import service as tariffs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

D = Decimal
FEN = D("0.01")
REFUSED = (ConflictError, InsufficientFundsError, ValidationError)


@dataclass(frozen=True)
class Step:
    action: str
    number: Decimal  # money, a use, a fraction (of 60) or a price
    pick: int  # which earlier entry a reversal or a repeat picks


OPEN_ACTIONS = [
    *("buy", "buy", "use", "use", "refund", "refund", "unrefund", "unrefund", "unbuy", "unbuy"),
    *("price", "repeat"),
]
open_steps = st.lists(
    st.builds(
        Step,
        st.sampled_from(OPEN_ACTIONS),
        st.decimals(min_value=D("0.01"), max_value=60, places=2),
        st.integers(min_value=0, max_value=5),
    ),
    min_size=1,
    max_size=12,
)
closed_steps = st.lists(
    st.builds(
        Step,
        st.sampled_from(["pay", "pay", "unpay", "unpay", "repeat", "unrefund"]),
        st.decimals(min_value=D("0.01"), max_value=60, places=2),
        st.integers(min_value=0, max_value=5),
    ),
    max_size=8,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    opened=open_steps,
    closed=closed_steps,
    credit=st.decimals(min_value=0, max_value=20, places=2),
    close_use=st.decimals(min_value=0, max_value=6, places=3),
)
def test_desk_entries_undone_restore_exactly_and_never_twice(
    opened: list[Step], closed: list[Step], credit: Decimal, close_use: Decimal
) -> None:
    run_desk(opened, closed, credit, close_use, definition=None)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    opened=open_steps,
    closed=closed_steps,
    credit=st.decimals(min_value=0, max_value=20, places=2),
    close_use=st.decimals(min_value=0, max_value=6, places=3),
)
def test_desk_entries_undone_on_tiers_with_a_free_allowance(
    opened: list[Step], closed: list[Step], credit: Decimal, close_use: Decimal
) -> None:
    # refunds take a free block on top with them, and their reversals put it back
    run_desk(opened, closed, credit, close_use, definition=FREE_THEN_TIERS)


def run_desk(
    opened: list[Step],
    closed: list[Step],
    credit: Decimal,
    close_use: Decimal,
    definition: dict[str, Any] | None,
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        engine = build_engine(f"sqlite:///{Path(folder) / 'q.sqlite3'}")
        load_all_tables().create_all(engine)
        clock = FakeClock(T0)
        db = Database(engine=engine, clock=clock)
        try:
            setup = quantity_account(db, credit=f"{credit}", definition=definition)
            Desk(db, clock, setup).run(opened, closed, close_use)
        finally:
            engine.dispose()


@dataclass
class Entry:
    """A desk entry made: its transfer, and what it changed (bought, unused value, remainder) —
    for a refund what its reversal must put back, for an arrears payment the quantity left it
    raised."""

    transfer_id: int
    key: str
    change: tuple[Decimal, Decimal, Decimal]
    reversed: bool = False


class Desk:
    def __init__(self, db: Database, clock: FakeClock, setup: Setup) -> None:
        self.db, self.clock, self.setup = db, clock, setup
        self.account = setup.account.account_id
        self.ingest = Ingestor(db)
        self.register = D(100)
        self.day = 0
        self.entries: dict[str, list[Entry]] = {"buy": [], "refund": [], "pay": []}
        self.last: tuple[Any, int | None] | None = None  # the last desk call and its answer
        self.closing_kept: Decimal | None = None

    def run(self, opened: list[Step], closed: list[Step], close_use: Decimal) -> None:
        for number, step in enumerate(opened):
            self.tick()
            getattr(self, f"do_{step.action}")(step, f"{step.action}-{number}")
            money_matches_lots(self.db, self.setup)
        self.close(close_use)
        for number, step in enumerate(closed):
            self.tick()
            getattr(self, f"do_{step.action}")(step, f"{step.action}-c{number}")
            self.closed_holds()
        owes = owed(self.db, self.setup.account)
        if owes > 0:  # everything paid: nothing owed, nothing used ahead
            self.pay(f"{owes}", "pay-all")
        view = self.view()
        assert (view.left, view.remainder, owed(self.db, self.setup.account)) == (0, 0, 0)
        check_books(self.db)

    # --- steps --------------------------------------------------------------------------------

    def do_buy(self, step: Step, key: str) -> None:
        before = self.view()
        transfer = self.desk(
            cashier.recharge, key, account_id=self.account, amount=step.number, method="cash"
        )
        self.entries["buy"].append(Entry(transfer, key, self.changed(before)))

    def do_use(self, step: Step, key: str) -> None:
        self.register += step.number / 10
        self.ingest.ingest([reading(self.setup.meter_id, self.clock.now, self.register)])

    def do_price(self, step: Step, key: str) -> None:
        tariffs.add_version(
            self.db,
            organisation_id=self.setup.org.id,
            tariff_id=self.setup.tariff_id,
            version={
                "effective_from": f"{(T0 + timedelta(days=self.day + 1)).date()}",
                "prices": {"flat": f"{step.number}"},
            },
            actor="op",
        )

    def do_refund(self, step: Step, key: str) -> None:
        view = self.view()
        most = min(view.unused_value + view.remainder, wallet(self.db, self.setup.account))
        amount = (most * step.number / 60).quantize(FEN, rounding=ROUND_FLOOR)
        if amount <= 0:
            return
        before = self.view()
        transfer = self.desk(
            cashier_refund.refund, key, account_id=self.account, amount=amount, method="cash"
        )
        self.entries["refund"].append(Entry(transfer, key, self.changed(before)))

    def do_unrefund(self, step: Step, key: str) -> None:
        """A refund reversed: exactly what it took comes back; refused (changing nothing) when
        reversed already, once the account is closed or while it has used ahead."""
        entry = self.pick("refund", step)
        if entry is None:
            return
        view, held = self.view(), self.held()
        try:
            self.reverse(entry, key)
        except REFUSED:
            assert entry.reversed or self.closed or view.left < 0, (entry, view)
            assert self.held() == held
            event("a refund reversal refused")
            return
        assert not (entry.reversed or self.closed or view.left < 0), (entry, view)
        entry.reversed = True
        assert self.changed(view) == tuple(-part for part in entry.change), entry
        event("a refund reversed")

    def do_unbuy(self, step: Step, key: str) -> None:
        """A recharge reversed takes back exactly its own lots, at their own prices (the other
        lots stay as they were, but for the money it left carried that a later lot used);
        refused, changing nothing, once part of them is used or refunded, or reversed already."""
        entry = self.pick("buy", step)
        if entry is None:
            return
        before, view = self.held(), self.view()
        recharge = entry.transfer_id
        bought_then, amount = self.bought_by(recharge)
        own = [b for b in view.blocks if b.bought_by == recharge]
        others = [b for b in view.blocks if b.bought_by != recharge and b.quantity]
        spent = used_of(view.blocks, view.used, recharge)
        try:
            self.reverse(entry, key)
        except REFUSED:
            assert self.held() == before
            # refused for the lot, or for the money (less in the wallet than the recharge)
            assert (
                entry.reversed
                or spent > 0
                or bought(own) < bought_then
                or wallet(self.db, self.setup.account) < amount + view.remainder
            ), (entry, view)
            event("a recharge reversal refused")
            return
        assert not entry.reversed and spent == 0 and bought(own) == bought_then, (entry, view)
        entry.reversed = True
        after = self.view()
        assert not [b for b in after.blocks if b.bought_by == recharge and b.quantity]
        kept = [b for b in after.blocks if b.quantity]
        money_back = amount - sum((b.quantity * b.price for b in own), D(0))
        if view.remainder >= money_back:  # what it carried is still carried: all else as it was
            assert kept == others, (view, after)
            assert after.remainder == view.remainder - money_back
            event("a recharge reversed")
        else:  # it came off the newest lot: only that lot is shorter
            assert kept[:-1] == others[:-1] and kept[-1].price == others[-1].price
            assert after.remainder == 0 and kept[-1].quantity < others[-1].quantity
            event("a recharge reversed, its carried money off the newest lot")
        assert after.bought <= view.bought - bought_then

    def do_repeat(self, step: Step, key: str) -> None:
        """The last desk call again with its key: the same answer, nothing changed."""
        if self.last is None:
            return
        call, first = self.last
        before = self.held()
        try:
            again = call()
        except REFUSED:
            assert first is None  # refused before, refused again
        else:
            assert again == first
        assert self.held() == before

    def do_pay(self, step: Step, key: str) -> None:
        owes = owed(self.db, self.setup.account)
        amount = max((owes * step.number / 60).quantize(FEN, rounding=ROUND_FLOOR), FEN)
        before = self.view().left
        try:
            transfer = self.pay(f"{amount}", key)
        except REFUSED:
            assert owes == 0
            return
        self.entries["pay"].append(Entry(transfer, key, (self.view().left - before, D(0), D(0))))

    def do_unpay(self, step: Step, key: str) -> None:
        entry = self.pick("pay", step)
        if entry is None:
            return
        before, left = self.held(), self.view().left
        try:
            self.reverse(entry, key)
        except REFUSED:
            assert entry.reversed
            assert self.held() == before
            return
        assert not entry.reversed
        entry.reversed = True
        assert self.view().left == left - entry.change[0]
        event("an arrears payment reversed")

    # --- the desk -----------------------------------------------------------------------------

    def desk(self, call: Any, key: str, **given: Any) -> int:
        def again() -> int:
            return int(
                call(
                    self.db,
                    organisation_id=self.setup.org.id,
                    actor="op",
                    idempotency_key=key,
                    **given,
                ).transfer_id
            )

        self.last = (again, None)
        transfer = again()
        self.last = (again, transfer)
        return transfer

    def reverse(self, entry: Entry, key: str) -> int:
        def again() -> int:
            return cashier_refund.reverse(
                self.db,
                organisation_id=self.setup.org.id,
                transfer_id=entry.transfer_id,
                actor="op",
                idempotency_key=key,
            )

        self.last = (again, None)
        transfer = again()
        self.last = (again, transfer)
        return transfer

    def pay(self, amount: str, key: str) -> int:
        return self.desk(
            cashier_arrears.pay_arrears, key, account_id=self.account, amount=amount, method="cash"
        )

    def close(self, use: Decimal) -> None:
        self.tick()
        self.register += use
        accounts.close_account(
            self.db,
            organisation_id=self.setup.org.id,
            number=self.setup.account.number,
            final_readings=[accounts.FinalReading(self.setup.meter_id, self.register)],
            refund_method="cash",
            actor="op",
            idempotency_key="close",
        )
        view = self.view()
        # what the closing kept of the carried remainder towards the use ahead
        self.closing_kept: Decimal | None = view.price * max(-view.left, D(0)) - owed(
            self.db, self.setup.account
        )
        assert self.closing_kept > -FEN, (view, self.closing_kept)
        self.closed_holds()

    # --- what is checked ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.closing_kept is not None

    def closed_holds(self) -> None:
        """A closed account: nothing unused, the debt is the quantity used ahead at its price
        (less what the closing kept of the carried remainder), and no debt, nothing ahead."""
        view, owes = self.view(), owed(self.db, self.setup.account)
        assert view.left <= 0 and view.remainder == 0, view
        assert wallet(self.db, self.setup.account) == 0
        gap = view.price * -view.left - owes
        assert self.closing_kept is not None
        assert -FEN < gap <= self.closing_kept + FEN, (view, owes, self.closing_kept)
        if owes == 0:
            assert view.left == 0, view

    def pick(self, kind: str, step: Step) -> Entry | None:
        found = self.entries[kind]
        return found[step.pick % len(found)] if found else None

    def tick(self) -> None:
        self.day += 1
        self.clock.now = T0 + timedelta(days=self.day, hours=12)

    def view(self) -> QuantityView:
        with self.db.read() as conn:
            return quantity.view(conn, self.account)

    def held(self) -> tuple[Any, ...]:
        """Everything a desk entry could change: the rows the money core writes, and the lots."""
        with self.db.read() as conn:
            lots = conn.execute(
                select(
                    quantity_lots.c.transfer_id,
                    quantity_lots.c.quantity,
                    quantity_lots.c.unit_price,
                    quantity_lots.c.remainder,
                )
                .where(quantity_lots.c.account_id == self.account)
                .order_by(quantity_lots.c.id)
            ).all()
        return (snapshot(self.db), [tuple(row) for row in lots])

    def bought_by(self, recharge: int) -> tuple[Decimal, Decimal]:
        """What a recharge bought (its lot rows) and its money."""
        with self.db.read() as conn:
            quantities = conn.execute(
                select(quantity_lots.c.quantity).where(
                    quantity_lots.c.transfer_id == recharge,
                    quantity_lots.c.unit_price.is_not(None),
                )
            ).scalars()
            amount = conn.execute(
                select(transfers.c.amount_fen).where(transfers.c.id == recharge)
            ).scalar_one()
            return sum(quantities, D(0)), D(amount) / 100

    def changed(self, before: QuantityView) -> tuple[Decimal, Decimal, Decimal]:
        """(bought, unused value, remainder) now less what they were ``before``."""
        now = self.view()
        return (
            now.bought - before.bought,
            now.unused_value - before.unused_value,
            now.remainder - before.remainder,
        )
