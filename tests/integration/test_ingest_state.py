"""The ingestor's kept state (billing/ingest_state.py): used only when nobody else wrote, and then
always equal to the database.

Every test ingests a messy stream (late, duplicated, rolled-over readings on TOU and tiered
meters sharing accounts, credit running out) and, after each batch, requires that every kept
cursor, running total and balance equals what the database holds. Between batches something
else writes — through the same pooled connection, through another connection, inside another use
case's transaction, or a batch fails half-way — and the next batch must notice and read
everything again. The outcome must equal an ingestor that keeps nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from builders import (
    ACTOR,
    T0,
    flat_definition,
    make_meter,
    make_org,
    make_tariff,
    open_account,
    shuffled_batches,
    snapshot,
    steady_stream,
    tou_tier_definition,
)
from sqlalchemy import Engine, text

from meterdesk.billing import cashier, postings
from meterdesk.billing.ingest import IncomingReading, Ingestor
from meterdesk.db import counters
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.db.metadata import load_all_tables
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration

D = Decimal


def _world(db: Database) -> tuple[list[list[IncomingReading]], dict[str, Any]]:
    """Six meters on three accounts (one shared), flat and TOU + tier tariffs, little credit."""
    org = make_org(db)
    flat = make_tariff(db, org, "flat", flat_definition("0.6537"))
    tou = make_tariff(db, org, "tou", tou_tier_definition())
    meters = [make_meter(db, org, f"M{i}", modulus="10000") for i in range(6)]
    accounts = {
        "A-1": open_account(db, org, "A-1", [(meters[0], flat, "9990"), (meters[1], tou, "0")], credit="30"),
        "A-2": open_account(
            db, org, "A-2", [(meters[2], tou, "100"), (meters[3], flat, "5")], credit="5", overdraft="10"
        ),
        "A-3": open_account(db, org, "A-3", [(meters[4], flat, "0"), (meters[5], tou, "0")], credit="500"),
    }  # fmt: skip
    stream = [
        reading
        for index, meter_id in enumerate(meters)
        for reading in steady_stream(
            meter_id,
            start_total=D("9990") if index == 0 else D("100") if index == 2 else D("5") if index == 3 else D(0),
            count=24,
            step=D("3.5"),
            every=timedelta(minutes=40),
            modulus=D(10000),
            seed=index,
        )
    ]  # fmt: skip
    batches = shuffled_batches(stream, size=7, window=20, seed=3)
    # some readings sent again, a few batches later
    for index in range(3, len(batches), 4):
        batches[index] = batches[index] + batches[index - 3][:2]
    return batches, {"org": org, "accounts": accounts}


def _run(
    db: Database,
    *,
    keep_state: bool,
    between: Callable[[int, Ingestor, dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], list[bool]]:
    batches, world = _world(db)
    ingestor = Ingestor(db, keep_state=keep_state)
    used: list[bool] = []
    for index, batch in enumerate(batches):
        if between is not None:
            between(index, ingestor, world)
        db.clock.advance(timedelta(seconds=30))  # type: ignore[attr-defined]
        with contextlib.suppress(InjectedError):
            ingestor.ingest(batch)
        used.append(ingestor.state.usable)
        with db.read() as conn:
            assert ingestor.state.differences(conn) == [], f"after batch {index}"
    return snapshot(db), used


class InjectedError(Exception):
    pass


def _fresh(engine_factory: Callable[[], Engine]) -> Database:
    return Database(engine=engine_factory(), clock=FakeClock(T0))


@pytest.fixture
def sqlite_factory(tmp_path: Any) -> Callable[[], Engine]:
    count = [0]

    def make() -> Engine:
        count[0] += 1
        engine = build_engine(f"sqlite:///{tmp_path}/state-{count[0]}.sqlite3")
        load_all_tables().create_all(engine)
        return engine

    return make


def test_a_lone_ingestor_keeps_its_state_and_bills_as_one_that_reads_everything(
    sqlite_factory: Callable[[], Engine],
) -> None:
    expected, _ = _run(_fresh(sqlite_factory), keep_state=False)
    actual, used = _run(_fresh(sqlite_factory), keep_state=True)
    assert actual == expected
    assert used[0] is False and all(used[1:])  # kept from the second batch on


def _recharge(db: Database, world: dict[str, Any], key: str) -> None:
    account = world["accounts"]["A-2"]
    cashier.recharge(
        db,
        organisation_id=world["org"].id,
        account_id=account.account_id,
        amount="3.00",
        method="cash",
        idempotency_key=key,
        actor=ACTOR,
    )


@pytest.mark.parametrize("every", [3, 5])
def test_a_recharge_between_batches_through_the_same_pool_is_noticed(
    sqlite_factory: Callable[[], Engine], every: int
) -> None:
    def recharge(index: int, ingestor: Ingestor, world: dict[str, Any]) -> None:
        if index and index % every == 0:
            _recharge(ingestor.db, world, f"r-{index}")

    expected, _ = _run(_fresh(sqlite_factory), keep_state=False, between=recharge)
    actual, used = _run(_fresh(sqlite_factory), keep_state=True, between=recharge)
    assert actual == expected
    assert [used[i] for i in range(every, len(used), every)] == [False] * len(
        range(every, len(used), every)
    )
    assert any(used)


def test_a_write_through_another_connection_is_noticed(
    sqlite_factory: Callable[[], Engine],
) -> None:
    """Another process (here: another engine on the same file) lets account A-2 go 50 yuan
    further into overdraft between batches 4 and 5 — the next deduction must see it."""

    def other_process(index: int, ingestor: Ingestor, world: dict[str, Any]) -> None:
        if index == 5:
            other = build_engine(str(ingestor.db.engine.url))
            with other.begin() as conn:
                conn.execute(
                    text("UPDATE ledger_accounts SET floor_fen = floor_fen - 5000 WHERE id = :i"),
                    {"i": world["accounts"]["A-2"].wallet_id},
                )
            other.dispose()

    expected, _ = _run(_fresh(sqlite_factory), keep_state=False, between=other_process)
    actual, used = _run(_fresh(sqlite_factory), keep_state=True, between=other_process)
    assert actual == expected
    assert used[4] is True and used[5] is False and used[6] is True


def test_a_batch_that_fails_half_way_leaves_nothing_kept(
    sqlite_factory: Callable[[], Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The posting of the sixth batch that posts fails after its readings, lines, cursors and
    transfers were written: the transaction rolls back, and the kept state must not remember
    any of it (the outcome equals an ingestor that keeps nothing and fails alike)."""
    original = postings.post_due
    calls = [0]

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        result = original(*args, **kwargs)
        if calls[0] == 6:
            raise InjectedError
        return result

    monkeypatch.setattr(postings, "post_due", failing)
    expected, _ = _run(_fresh(sqlite_factory), keep_state=False)
    calls[0] = 0
    actual, used = _run(_fresh(sqlite_factory), keep_state=True)
    assert actual == expected
    # kept from the second batch on, except: the failed batch (forgotten when it failed) and
    # the batch after it (nothing to prove)
    assert used.count(False) == 3
    assert calls[0] > 6


def test_postgresql_never_keeps_state(db: Database) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the PostgreSQL half of this test")
    _, used = _run(db, keep_state=True)
    assert not any(used)


def _other_engine_writes(ingestor: Ingestor, sql: str, **params: Any) -> None:
    """A write committed by another process (another engine on the same file)."""
    other = build_engine(str(ingestor.db.engine.url))
    try:
        with other.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        other.dispose()


def test_a_write_to_other_tables_keeps_the_state_and_is_billed_alike(
    sqlite_factory: Callable[[], Engine],
) -> None:
    """In a running platform the executor, the notification sender or the desk commit between
    nearly every two batches, without touching cursors, running totals or balances: the kept
    values stay usable (the triggers' marker is unchanged), the configuration checks run again
    (:attr:`IngestState.nothing_changed` is false) and the outcome is the same."""
    nothing_changed: list[bool] = []

    def elsewhere(index: int, ingestor: Ingestor, _world: dict[str, Any]) -> None:
        nothing_changed.append(ingestor.state.nothing_changed)
        if index and index % 2 == 0:
            _other_engine_writes(
                ingestor,
                "INSERT INTO change_counters (name, value) VALUES (:n, 1)",
                n=f"elsewhere-{index}",
            )

    expected, _ = _run(_fresh(sqlite_factory), keep_state=False, between=elsewhere)
    nothing_changed.clear()
    actual, used = _run(_fresh(sqlite_factory), keep_state=True, between=elsewhere)
    assert actual == expected
    assert used[0] is False and all(used[1:])  # the other writes break nothing kept
    # read before each batch: the previous batch's proof — the first one only when nothing
    # was written between the two batches before it
    assert any(nothing_changed[2:]) and not all(nothing_changed[2:])


def test_a_configuration_change_elsewhere_is_seen_although_the_state_stays_kept(
    sqlite_factory: Callable[[], Engine],
) -> None:
    """Another process changes meter M0's CT ratio (and bumps the configuration marker, as
    every use case that changes a meter does) between batches 6 and 7: the kept cursors,
    totals and balances stay usable, but the ingestor must read the configuration again and
    bill M0's later consumption 2.5 times over, as an ingestor that keeps nothing does."""

    def new_ct(index: int, ingestor: Ingestor, _world: dict[str, Any]) -> None:
        if index == 7:
            _other_engine_writes(ingestor, "UPDATE meters SET ct_ratio = 250 WHERE number = 'M0'")
            _other_engine_writes(
                ingestor, "UPDATE change_counters SET value = value + 7 WHERE name = 'meter_config'"
            )

    expected, _ = _run(_fresh(sqlite_factory), keep_state=False, between=new_ct)
    actual, used = _run(_fresh(sqlite_factory), keep_state=True, between=new_ct)
    assert actual == expected
    assert used[7] is True


@pytest.mark.parametrize("table", ["meter_cursors", "period_totals", "ledger_accounts"])
def test_a_raw_write_to_a_kept_table_is_noticed(
    sqlite_factory: Callable[[], Engine], table: str
) -> None:
    """Whatever writes a kept table — here plain SQL from another process, through no code of
    ours — sets the marker: the next batch reads everything again."""
    columns = {"meter_cursors": "measured_at", "period_totals": "postings", "ledger_accounts": "floor_fen"}  # fmt: skip
    column = columns[table]

    def raw(index: int, ingestor: Ingestor, _world: dict[str, Any]) -> None:
        if index == 5:
            _other_engine_writes(ingestor, f"UPDATE {table} SET {column} = {column}")

    _, used = _run(_fresh(sqlite_factory), keep_state=True, between=raw)
    assert used[4] is True and used[5] is False and used[6] is True


def test_without_the_triggers_only_the_first_proof_counts(
    sqlite_factory: Callable[[], Engine],
) -> None:
    """A database created before the triggers: a write elsewhere breaks the kept state, as it
    did before them."""

    def drop_then_elsewhere(index: int, ingestor: Ingestor, _world: dict[str, Any]) -> None:
        if index == 0:
            with ingestor.db.engine.begin() as conn:
                for name in counters.TRIGGER_NAMES:
                    conn.exec_driver_sql(f"DROP TRIGGER {name}")
        if index == 5:
            _other_engine_writes(
                ingestor, "INSERT INTO change_counters (name, value) VALUES ('elsewhere', 1)"
            )

    _, used = _run(_fresh(sqlite_factory), keep_state=True, between=drop_then_elsewhere)
    assert used[4] is True and used[5] is False and used[6] is True
