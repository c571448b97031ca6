"""``meterdesk tariff`` — price schemes and their dated versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from meterdesk.cli.common import (
    ActorOption,
    JsonOption,
    OrgOption,
    app,
    emit,
    handled,
    load_json_file,
    organisation_id,
    who,
)
from meterdesk.shared.errors import ValidationError
from meterdesk.tariffs import service as tariffs

tariff_cli = typer.Typer(help="Tariffs: flat, time-of-use, tiered, versions.", no_args_is_help=True)

FileArgument = Annotated[
    Path, typer.Option("--file", exists=True, dir_okay=False, help="JSON definition")
]


def _load(path: Path) -> dict[str, Any]:
    loaded = load_json_file(path)
    if not isinstance(loaded, dict):
        raise ValidationError(f"{path.name}: expected a JSON object")
    return loaded


@tariff_cli.command("create")
def create(
    name: str,
    org: OrgOption,
    file: FileArgument,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Create a tariff from a JSON file: {"utility": ..., "versions": [...]} (see docs/tariffs.md)."""
    with handled():
        new = tariffs.create_tariff(
            app().db,
            organisation_id=organisation_id(org),
            name=name,
            definition=_load(file),
            actor=who(actor),
        )
        emit(
            {"id": new, "name": name},
            as_json,
            lambda v: f"tariff {v['name']} created (id {v['id']})",
        )


@tariff_cli.command("add-version")
def add_version(
    name: str,
    org: OrgOption,
    file: FileArgument,
    actor: ActorOption = "",
    as_json: JsonOption = False,
) -> None:
    """Add a dated version (a price change from a future date; the past is never re-priced)."""
    with handled():
        o = organisation_id(org)
        tariff_id = tariffs.find_tariff(app().db, organisation_id=o, name=name)
        effective = tariffs.add_version(
            app().db, organisation_id=o, tariff_id=tariff_id, version=_load(file), actor=who(actor)
        )
        emit(
            {"tariff": name, "effective_from": effective},
            as_json,
            lambda v: f"tariff {name}: new version in force from {effective}",
        )


@tariff_cli.command("show")
def show(name: str, org: OrgOption, as_json: JsonOption = False) -> None:
    """Show a tariff with all its versions."""
    with handled():
        o = organisation_id(org)
        described = tariffs.describe(
            app().db,
            organisation_id=o,
            tariff_id=tariffs.find_tariff(app().db, organisation_id=o, name=name),
        )
        emit(described, as_json, lambda v: json.dumps(v, indent=2, ensure_ascii=False))
