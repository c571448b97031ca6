"""``meterdesk command …`` from the shell (the sub-app on its own, on the embedded SQLite)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meterdesk.cli import common as cli_common
from meterdesk.cli.commands import command_cli
from meterdesk.metering import service as metering
from meterdesk.sites import service as sites

pytestmark = pytest.mark.integration


@pytest.fixture
def org(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("METERDESK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("METERDESK_DATABASE_URL", raising=False)
    cli_common.app.cache_clear()
    db = cli_common.app().db
    org_id = sites.create_organisation(db, name="Org A")
    site_id = sites.create_site(db, organisation_id=org_id, name="Park", timezone="Asia/Shanghai")
    spec = metering.MeterSpec(
        number="M1", utility="electricity", kind="single_phase", protocol="dlt645", site_id=site_id
    )
    metering.create_meter(db, organisation_id=org_id, spec=spec, actor="test")
    yield "Org A"
    db.engine.dispose()
    cli_common.app.cache_clear()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(command_cli, list(args))
    return result.exit_code, result.output


def test_send_list_show_cancel(org: str) -> None:
    code, out = invoke("send", "M1", "relay_trip", "--org", org, "--key", "k1", "--json")
    assert code == 0, out
    sent = json.loads(out)
    assert (sent["replayed"], sent["command"]["status"], sent["command"]["desired"]) == (
        False,
        "pending",
        "relay open",
    )
    command_id = str(sent["command"]["id"])

    code, out = invoke("send", "M1", "relay_trip", "--org", org, "--key", "k1")
    assert code == 0 and out.startswith("already recorded (same key)")
    code, out = invoke("list", "--org", org, "--status", "pending")
    assert code == 0 and f"#{command_id}" in out and "relay_trip" in out
    assert out.splitlines()[0].split() == ["#", "meter", "command", "status", "wants"]
    code, out = invoke(
        "cancel", command_id, "--org", org, "--reason", "wrong room", "--actor", "li"
    )
    assert code == 0 and "cancelled by li: wrong room" in out
    code, out = invoke("show", command_id, "--org", org)
    assert code == 0 and "created" in out and "cancelled" in out


def test_limits_and_errors_have_exit_codes(org: str) -> None:
    code, out = invoke(
        "send", "M1", "write_limits", "--org", org, "--limit", "alarm_1=20", "--limit", "alarm_2=10"
    )
    assert code == 0 and "limits alarm_1=20.00, alarm_2=10.00" in out
    assert invoke("send", "M1", "explode", "--org", org)[0] == 2
    assert invoke("send", "M1", "write_limits", "--org", org, "--limit", "alarm_1")[0] == 2
    assert invoke("send", "M9", "relay_trip", "--org", org)[0] == 3
    assert invoke("send", "M1", "relay_trip", "--org", org, "--key", "k2")[0] == 0
    assert invoke("send", "M1", "relay_close", "--org", org, "--key", "k2")[0] == 5


def test_reconcile_without_meter_billing_accounts(org: str) -> None:
    assert invoke("reconcile", "--org", org) == (0, "no meter-billing accounts\n")


def test_take_back_records_once_per_key_and_refuses_bad_input(org: str) -> None:
    code, out = invoke("take-back", "M1", "--org", org, "--amount", "12.50", "--key", "tb-1")
    assert code == 0 and "take_back for meter M1: wants take-back 1 of 12.50 accepted" in out, out
    code, out = invoke(
        "take-back", "M1", "--org", org, "--amount", "12.5", "--key", "tb-1", "--json"
    )
    assert code == 0 and json.loads(out)["replayed"] is True
    code, out = invoke("take-back", "M1", "--org", org, "--all", "--key", "tb-2", "--json")
    assert code == 0 and json.loads(out)["command"]["params"] == {"all": True, "take_back_count": 1}
    for bad in (
        ["--key", "tb-3"],  # neither an amount nor --all
        ["--amount", "5", "--all", "--key", "tb-3"],
        ["--amount", "-5", "--key", "tb-3"],
        ["--amount", "5"],  # no key: a money command always has one
    ):
        code, out = invoke("take-back", "M1", "--org", org, *bad)
        assert code == 2, (bad, out)
    assert invoke("take-back", "M9", "--org", org, "--all", "--key", "tb-4")[0] == 3
    assert invoke("take-back", "M1", "--org", org, "--amount", "13", "--key", "tb-1")[0] == 5
    assert invoke("send", "M1", "take_back", "--org", org)[0] == 2
    code, out = invoke("list", "--org", org)
    assert out.count("take_back") == 2
