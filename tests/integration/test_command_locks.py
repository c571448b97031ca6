"""On PostgreSQL, recording a command for a meter must not wait for transactions that merely
reference the meter. ``bench control`` found the deadlock this prevents: an ingest batch inserts
readings of meter M (``KEY SHARE`` on M's row) and then deducts from the wallet, while a desk
recharge credits the same wallet and then records the restore command (a lock on M's row). With
``FOR UPDATE`` each waited for the other and PostgreSQL aborted one of them."""

from __future__ import annotations

import threading

import pytest
from builders import one_meter_account
from sqlalchemy import Engine, insert, text

from meterdesk.db.database import Database
from meterdesk.devices.commands import writes
from meterdesk.devices.tables import device_status

pytestmark = pytest.mark.integration


def test_a_command_lock_does_not_wait_for_rows_that_reference_the_meter(
    engine: Engine, db: Database
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("row locks: PostgreSQL only (SQLite serialises writers)")
    setup = one_meter_account(db)
    meter, wallet = setup.meter_id, setup.account.wallet_id
    ingest = engine.connect()  # plays the ingest batch
    recharge = engine.connect()  # plays the desk recharge
    try:
        ingest.begin()
        ingest.execute(  # a row referencing the meter: KEY SHARE on its row
            insert(device_status).values(
                meter_id=meter, state="online", failures=0, updated_at=db.clock()
            )
        )
        recharge.begin()
        recharge.execute(text("SET LOCAL lock_timeout = '5s'"))
        recharge.execute(
            text("UPDATE ledger_accounts SET balance_fen = balance_fen WHERE id = :w"),
            {"w": wallet},
        )
        locked = writes.lock_meter(recharge, organisation_id=setup.org.id, meter_id=meter)
        assert locked is not None and locked["id"] == meter  # did not wait for the ingest

        finished = threading.Event()

        def ingest_deducts() -> None:  # now waits for the recharge's wallet, as it should
            ingest.execute(
                text("UPDATE ledger_accounts SET balance_fen = balance_fen WHERE id = :w"),
                {"w": wallet},
            )
            finished.set()

        worker = threading.Thread(target=ingest_deducts)
        worker.start()
        assert not finished.wait(0.3)
        recharge.commit()  # the recharge finishes; the ingest goes on: no deadlock
        worker.join(10)
        assert finished.is_set()
        ingest.commit()
    finally:
        ingest.close()
        recharge.close()
