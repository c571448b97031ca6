"""``meterdesk account set-tariff``: change the tariff of a meter of an open account (改电价)."""

from __future__ import annotations

from typing import Annotated

import typer

from meterdesk.billing import accounts, tariff_change
from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    organisation_id,
    who,
)
from meterdesk.metering.service import find_meter
from meterdesk.tariffs.service import find_tariff


def set_tariff(
    number: Annotated[str, typer.Argument(metavar="ACCOUNT", help="account number")],
    org: OrgOption,
    meter: Annotated[str, typer.Option(help="meter number (a meter of the account)")],
    tariff: Annotated[str, typer.Option(help="name of the new tariff (same utility)")],
    key: Annotated[
        str, typer.Option("--key", help="idempotency key: repeating it changes the tariff once")
    ],
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Bill a meter by another tariff from its latest accepted reading on; everything before that
    reading (also readings that arrive late) stays priced by the old tariff."""
    with handled():
        o = organisation_id(org)
        with app().db.read() as conn:
            account = accounts.account_by_number(conn, organisation_id=o, number=number)
            meter_id = find_meter(conn, organisation_id=o, number=meter)
        done = tariff_change.change_tariff(
            app().db,
            organisation_id=o,
            account_id=int(str(account["id"])),
            meter_id=meter_id,
            tariff_id=find_tariff(app().db, organisation_id=o, name=tariff),
            actor=who(actor),
            idempotency_key=key,
        )
        emit(done, as_json, _text)


def _text(done: tariff_change.TariffChanged) -> str:
    if done.replayed:
        return f"{done.message} (already done with this key: nothing changed again)"
    return done.message
