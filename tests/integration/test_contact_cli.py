"""Phones and e-mails at the ``meterdesk`` command line: stored normalised; a bad one is exit code
2 with the field, the value and the reason, and nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from test_cli import ORG, data_dir, run, run_json, set_up_places

from meterdesk.billing.tables import account_presets, accounts
from meterdesk.cli import common as cli_common
from meterdesk.sites.tables import customers

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]


def stored_customers() -> list[tuple[str, str | None, str | None]]:
    with cli_common.app().db.read() as conn:
        rows = conn.execute(
            select(customers.c.name, customers.c.phone, customers.c.email).order_by(customers.c.id)
        )
        return [(row.name, row.phone, row.email) for row in rows]


def test_a_customer_created_and_changed_from_the_cli_is_stored_normalised(
    data_dir: Path, tmp_path: Path
) -> None:
    set_up_places(tmp_path)  # Li Lei, 13900000000
    made = run_json(
        "customer", "create", "Wang", *ORG, "--phone", "138 0013 8000", "--email", "W@EXAMPLE.COM"
    )
    run("customer", "update", str(made["id"]), *ORG, "--phone", "+852 6123 4567")

    assert stored_customers() == [
        ("Li Lei", "+8613900000000", None),
        ("Wang", "+85261234567", "W@example.com"),
    ]


LANDLINE_WARNING = (
    "phone: +86 10 6552 9988 is a landline: it cannot receive SMS (voice calls reach it); "
    "add a mobile number for SMS"
)


def test_a_landline_is_stored_with_a_warning_that_sms_cannot_reach_it(
    data_dir: Path, tmp_path: Path
) -> None:
    """Voice calls reach a landline, so it is accepted; SMS to it fail, so the CLI says so."""
    customer = set_up_places(tmp_path)

    created = run("customer", "create", "Zhao", *ORG, "--phone", "010-6552-9988")
    assert created.stderr == f"warning: {LANDLINE_WARNING}\n"
    changed = run("customer", "update", str(customer), *ORG, "--phone", "+86 10 6552 9988")
    assert changed.stdout.startswith(f"customer {customer} updated (phone)")
    assert changed.stderr == f"warning: {LANDLINE_WARNING}\n"
    made = run_json("customer", "create", "Qian", *ORG, "--phone", "010 6552 9988")
    assert made["phone_warning"] == LANDLINE_WARNING

    assert stored_customers()[-3:] == [
        ("Li Lei", "+861065529988", None),
        ("Zhao", "+861065529988", None),
        ("Qian", "+861065529988", None),
    ]
    mobile = run("customer", "update", str(customer), *ORG, "--phone", "13900000000")
    assert mobile.stderr == ""
    assert (
        run_json("customer", "create", "Sun", *ORG, "--phone", "13800138000")["phone_warning"]
        is None
    )


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--phone", "138 0013 800", "phone: '138 0013 800' is not a valid number for CN (10 digits; mainland"),
        ("--phone", "+86 12345", "phone: '+86 12345' is not a valid number for CN (5 digits;"),
        ("--email", "abc@", "email: 'abc@' is not an e-mail address (There must be something after"),
        ("--email", "a@b", "email: 'a@b' is not an e-mail address ("),
    ],
)  # fmt: skip
def test_a_bad_phone_or_email_is_exit_2_with_the_reason_and_changes_nothing(
    data_dir: Path, tmp_path: Path, option: str, value: str, said: str
) -> None:
    customer = set_up_places(tmp_path)
    before = stored_customers()

    created = run("customer", "create", "Wei", *ORG, option, value, code=2)
    changed = run("customer", "update", str(customer), *ORG, "--name", "X", option, value, code=2)

    assert said in " ".join(created.output.split())  # rich may wrap the line
    assert said in " ".join(changed.output.split())
    assert stored_customers() == before


def test_a_preset_from_the_cli_checks_and_normalises_the_customers_contacts(
    data_dir: Path, tmp_path: Path
) -> None:
    set_up_places(tmp_path)
    preset = [
        "account", "preset", "add", "P-1", *ORG, "--customer-name", "Han",
        "--room", "Park/B1/F1/101", "--meter", "M1", "--tariff", "flat",
    ]  # fmt: skip

    refused = run(*preset, "--customer-phone", "138 0013 800", code=2)
    assert "customer_phone: '138 0013 800' is not a valid number" in refused.output
    refused = run(*preset, "--customer-email", "han@", code=2)
    assert "customer_email: 'han@' is not an e-mail address" in refused.output
    with cli_common.app().db.read() as conn:
        assert conn.execute(select(account_presets.c.id)).all() == []

    added = run(*preset, "--customer-phone", "138-0013-8000", "--customer-email", "Han@Example.com")
    assert added.stderr == ""  # a mobile: no warning
    with cli_common.app().db.read() as conn:
        payload = json.loads(conn.execute(select(account_presets.c.payload)).scalar_one())
    assert (payload["customer_phone"], payload["customer_email"]) == (
        "+8613800138000",
        "Han@example.com",
    )


def test_a_channels_operator_addresses_are_checked_from_the_cli(
    data_dir: Path, tmp_path: Path
) -> None:
    set_up_places(tmp_path)
    settings = tmp_path / "sms.json"
    channel = ["notification", "channel", "set", "sms", *ORG, "--provider", "aliyun"]

    settings.write_text(json.dumps({"operator_addresses": ["139 0000 0000", "1390000000"]}))
    refused = run(*channel, "--config-file", str(settings), code=2)
    assert "operator_addresses[1]: '1390000000' is not a valid number" in refused.output

    settings.write_text(json.dumps({"operator_addresses": ["139 0000 0000"]}))
    saved = run_json(*channel, "--config-file", str(settings))
    assert saved["config"]["operator_addresses"] == ["+8613900000000"]
    test = run("notification", "channel", "test", "sms", *ORG, "--to", "139-0000", code=2)
    assert "address: '139-0000' is not a valid number for CN" in test.output


def stored_openids() -> list[tuple[str, str | None, str | None]]:
    with cli_common.app().db.read() as conn:
        table = customers
        rows = conn.execute(
            select(table.c.name, table.c.wechat_openid, table.c.wechat_mini_openid).order_by(
                table.c.id
            )
        )
        return [(row.name, row.wechat_openid, row.wechat_mini_openid) for row in rows]


def test_a_customers_mini_program_openid_is_its_own_field_at_the_cli(
    data_dir: Path, tmp_path: Path
) -> None:
    set_up_places(tmp_path)
    mini = "oMINIwang0123456789abcdefgh"
    made = run_json(
        "customer", "create", "Wang", *ORG, "--wechat-openid", "oOA-wang", "--wechat-mini-openid", mini
    )  # fmt: skip
    assert stored_openids()[-1] == ("Wang", "oOA-wang", mini)
    listed = run_json("customer", "list", *ORG)
    assert (listed[-1]["wechat_openid"], listed[-1]["wechat_mini_openid"]) == ("oOA-wang", mini)

    refused = run(
        "customer", "update", str(made["id"]), *ORG, "--wechat-mini-openid", "wang 138", code=2
    )
    assert "wechat_mini_openid: 'wang 138' is not a WeChat openid" in " ".join(
        refused.output.split()
    )
    assert stored_openids()[-1] == ("Wang", "oOA-wang", mini)

    changed = run_json("customer", "update", str(made["id"]), *ORG, "--wechat-mini-openid", "")
    assert changed["changed"] == ["wechat_mini_openid"]
    assert stored_openids()[-1] == ("Wang", "oOA-wang", None)  # cleared; the other stays


def test_a_preset_with_a_landline_is_stored_with_a_warning_that_sms_cannot_reach_it(
    data_dir: Path, tmp_path: Path
) -> None:
    set_up_places(tmp_path)
    preset = [
        "account", "preset", "add", "P-1", *ORG, "--customer-name", "Han",
        "--room", "Park/B1/F1/101", "--meter", "M1", "--tariff", "flat",
    ]  # fmt: skip
    added = run(*preset, "--customer-phone", "010 6552 9988")
    assert added.stderr == f"warning: customer_{LANDLINE_WARNING}\n"
    assert (
        run_json(*preset[:3], "P-2", *preset[4:], "--customer-phone", "010-6552-9988")[
            "phone_warning"
        ]
        == "customer_" + LANDLINE_WARNING
    )


IMPORT_HEADER = (
    "account_number,customer_name,customer_phone,site,building,floor,room,meter_numbers,tariffs"
)


def test_an_import_row_with_a_landline_is_done_with_a_warning_that_sms_cannot_reach_it(
    data_dir: Path, tmp_path: Path
) -> None:
    set_up_places(tmp_path)
    sheet = tmp_path / "accounts.csv"
    sheet.write_text(
        f"{IMPORT_HEADER}\n"
        "P-1,Han,010 6552 9988,Park,B1,F1,101,M1,flat\n"
        "P-2,Wei,138 0013 8000,Park,B1,F1,101,M1,flat\n",
        encoding="utf-8",
    )

    done = run("account", "import", str(sheet), *ORG)

    assert done.stdout.splitlines() == [
        "row 2: P-1: OK pre-entered",
        f"  warning: customer_{LANDLINE_WARNING}",
        "row 3: P-2: OK pre-entered",
        "2 of 2 rows done",
    ]
    again = sheet.with_name("more.csv")
    again.write_text(sheet.read_text().replace("P-", "Q-"), encoding="utf-8")
    rows = run_json("account", "import", str(again), *ORG)
    assert [(r["account_number"], r["ok"], r["phone_warning"]) for r in rows] == [
        ("Q-1", True, f"customer_{LANDLINE_WARNING}"),
        ("Q-2", True, None),
    ]


def test_an_import_opens_for_the_customer_stored_with_the_old_spelling_of_its_phone(
    data_dir: Path, tmp_path: Path
) -> None:
    """Han was stored before phones were normalised ("138-0013-8000"): the row's
    +8613800138000 is the same number, so the account is Han's and no second Han appears."""
    set_up_places(tmp_path)
    db = cli_common.app().db
    with db.transaction() as conn:
        org = conn.execute(select(customers.c.organisation_id)).scalars().first()
        han = conn.execute(
            insert(customers).values(
                organisation_id=org, name="Han", phone="138-0013-8000", created_at=db.clock()
            )
        ).inserted_primary_key[0]
    sheet = tmp_path / "accounts.csv"
    sheet.write_text(
        f"{IMPORT_HEADER},opening_readings\nA-9,Han,+86 13800138000,Park,B1,F1,101,M1,flat,0\n",
        encoding="utf-8",
    )

    rows = run_json("account", "import", str(sheet), *ORG, "--open")

    assert [(r["ok"], r["message"]) for r in rows] == [(True, "opened")]
    assert [c for c in stored_customers() if c[0] == "Han"] == [("Han", "138-0013-8000", None)]
    with db.read() as conn:
        owner = conn.execute(
            select(accounts.c.customer_id).where(accounts.c.number == "A-9")
        ).scalar_one()
    assert owner == han


def test_an_sms_operator_address_that_is_a_landline_is_saved_with_a_warning(
    data_dir: Path, tmp_path: Path
) -> None:
    """SMS cannot reach a landline: ``channel set sms`` says so on stderr (and in
    ``address_warnings`` with --json) and saves it; ``channel set voice`` is silent."""
    run("org", "create", "Acme")
    settings = tmp_path / "sms.json"
    settings.write_text(
        json.dumps(
            {
                "access_key_id": "id",
                "sign_name": "s",
                "operator_addresses": ["13800138000", "010 6552 9988"],
            }
        ),
        encoding="utf-8",
    )
    channel = ["notification", "channel", "set"]
    options = [*ORG, "--provider", "aliyun", "--config-file", str(settings)]
    said = LANDLINE_WARNING.replace("phone:", "operator_addresses[1]:")

    sms = run(*channel, "sms", *options)
    assert sms.stderr == f"warning: {said}\n"
    assert "+861065529988" in sms.stdout
    assert run_json(*channel, "sms", *options)["address_warnings"] == [said]

    voice = run(*channel, "voice", *options)
    assert voice.stderr == ""
    assert run_json(*channel, "voice", *options)["address_warnings"] == []

    listed = run("notification", "channel", "list", *ORG).stdout  # the list says it too
    assert f"         warning: {said}" in listed
    assert listed.count("warning:") == 1  # the SMS channel only
