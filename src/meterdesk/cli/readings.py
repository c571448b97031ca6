"""``meterdesk readings`` and ``meterdesk quarantine`` — feeding readings and working the
quarantine of readings that did not fit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from meterdesk.billing import corrections
from meterdesk.billing.ingest import IncomingReading, IngestReport
from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    organisation_id,
    parse_when,
    who,
)
from meterdesk.metering import service as metering
from meterdesk.metering.model import BANDS, ReadingSource
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import from_fen, parse_quantity
from meterdesk.shared.sheets import csv_lines, table

readings_cli = typer.Typer(help="Meter readings: import, replace a meter.", no_args_is_help=True)
quarantine_cli = typer.Typer(
    help="Readings that did not fit (异常读数): list, release, discard.", no_args_is_help=True
)

IMPORT_BATCH = 5000


READING_COLUMNS = ("meter_number", "measured_at", "total", *BANDS)


def parse_reading_rows(org: int, path: Path) -> list[IncomingReading]:
    """CSV with header meter_number, measured_at (ISO with zone, or ms since epoch), total and
    optionally one column per band (sharp, peak, flat, valley, deep_valley). Every row is
    checked before anything is stored; the first bad row stops the import with its line number
    (as the file numbers it: blank lines counted). An unknown column stops it too: a misspelt
    band column was ignored, and the band registers with it."""
    rows = table(csv_lines(path), path.name, READING_COLUMNS)
    if rows and not {"meter_number", "measured_at", "total"} <= set(rows[0]):
        raise ValidationError("the CSV needs the columns meter_number, measured_at, total")
    meters: dict[str, int] = {}
    result = []
    with app().db.read() as conn:
        for row in rows:
            line = row.line
            try:
                number = row["meter_number"].strip()
                if number not in meters:
                    meters[number] = metering.find_meter(conn, organisation_id=org, number=number)
                bands = {
                    b: parse_quantity(row[b], field=b) for b in BANDS if (row.get(b) or "").strip()
                }
                when = parse_when(row["measured_at"])
                assert when is not None
                result.append(
                    IncomingReading(
                        meters[number],
                        when,
                        parse_quantity(row["total"], field="total"),
                        bands or None,
                        ReadingSource.IMPORT,
                    )
                )
            except (ValidationError, KeyError, AttributeError) as error:
                raise ValidationError(f"line {line}: {error}") from None
    return result


@readings_cli.command("import")
def import_(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV with the columns meter_number, measured_at (ISO with its zone, e.g. "
            "2026-12-01T08:00:00+08:00, or ms since epoch), total; optionally sharp, peak, "
            "flat, valley, deep_valley",
        ),
    ],
    org: OrgOption,
    as_json: JsonOption = False,
) -> None:
    """Import readings from CSV and bill them (duplicates are ignored, so re-importing is safe).
    Every row is checked before anything is stored: a bad row stops the import with its line."""
    with handled():
        incoming = parse_reading_rows(organisation_id(org), file)
        total = IngestReport()
        for start in range(0, len(incoming), IMPORT_BATCH):
            total.merge(app().ingestor.ingest(incoming[start : start + IMPORT_BATCH]))
        emit(
            total,
            as_json,
            lambda r: (
                f"{r.received} readings: {r.accepted} accepted, {r.duplicates} duplicates, "
                f"{r.quarantined} quarantined, {r.late} meters with late data; "
                f"{r.intervals_priced} intervals priced, {from_fen(r.deducted_fen)} deducted"
            ),
        )


@readings_cli.command("replace-meter")
def replace_meter(
    meter: str,
    org: OrgOption,
    old_final: Annotated[str, typer.Option(help="final reading of the old device")],
    new_initial: Annotated[str, typer.Option(help="initial reading of the new device")],
    at: Annotated[str | None, typer.Option(help="ISO time of the swap, default now")] = None,
    new_address: Annotated[str, typer.Option()] = "",
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Replace a meter's device (换表): bill the old one to its final reading, start the new one."""
    with handled():
        o = organisation_id(org)
        with app().db.read() as conn:
            meter_id = metering.find_meter(conn, organisation_id=o, number=meter)
        replacement = corrections.Replacement(
            meter_id=meter_id,
            at=parse_when(at) or app().db.clock(),
            old_final_total=parse_quantity(old_final, field="old_final"),
            new_initial_total=parse_quantity(new_initial, field="new_initial"),
            new_address=new_address,
        )
        generation = corrections.replace_meter(
            app().db,
            organisation_id=o,
            replacement=replacement,
            actor=who(actor),
            ingestor=app().ingestor,
        )
        emit(
            {"meter": meter, "generation": generation},
            as_json,
            lambda v: f"meter {meter} replaced (device generation {generation})",
        )


@quarantine_cli.command("list")
def list_(
    org: OrgOption,
    status: Annotated[str, typer.Option(help="open|released|discarded")] = "open",
    as_json: JsonOption = False,
) -> None:
    """Quarantined readings with their reasons."""
    with handled():
        items = metering.list_quarantine(
            app().db, organisation_id=organisation_id(org), status=status
        )
        emit(
            items,
            as_json,
            lambda v: (
                "\n".join(
                    f"#{i['id']} meter {i['meter_number'] or i['source_ref']} at "
                    f"{i['measured_at'].isoformat() if i['measured_at'] else '?'}: "
                    f"{i['reason_code']} — {i['reason']}"
                    for i in v
                )
                or f"no {status} items"
            ),
        )


@quarantine_cli.command("release")
def release(
    item: int, org: OrgOption, actor: ActorOption = "", as_json: JsonOption = False
) -> None:
    """Accept a quarantined reading as real (a jump is billed; a decrease becomes a reset)."""
    with handled():
        report = corrections.release(
            app().db,
            organisation_id=organisation_id(org),
            quarantine_id=item,
            actor=who(actor),
            ingestor=app().ingestor,
        )
        emit(
            report,
            as_json,
            lambda r: (
                f"released #{item}: {r.accepted} reading(s) accepted, {from_fen(r.deducted_fen)} deducted"
            ),
        )


@quarantine_cli.command("discard")
def discard(
    item: int, org: OrgOption, actor: ActorOption = "", as_json: JsonOption = False
) -> None:
    """Keep a quarantined reading on record but never bill it."""
    with handled():
        corrections.discard(
            app().db, organisation_id=organisation_id(org), quarantine_id=item, actor=who(actor)
        )
        emit({"discarded": item}, as_json, lambda v: f"discarded #{item}")
