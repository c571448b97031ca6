"""Phones and e-mails checked and normalised at every way they enter, on SQLite and PostgreSQL:
customers (create, change), pre-entered accounts and imports (a bad row reports its row number
and changes nothing), the channels' operator addresses and test messages — and customer search
finds a stored E.164 number however it is typed.

Before, a phone was only checked for length and an e-mail for "@": "138 0013 800", "+86 12345",
"abc@" and "a@b" were stored, and failed at the SMS or mail provider days later."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from builders import ACTOR, Org, flat_definition, make_meter, make_org, make_tariff
from openpyxl import Workbook
from sqlalchemy import func, insert, select

from meterdesk.api.queries.common import Window
from meterdesk.api.queries.places import list_customers
from meterdesk.billing import presets
from meterdesk.billing.tables import account_presets, accounts
from meterdesk.db.database import Database
from meterdesk.notifications import channel_test, configuration
from meterdesk.notifications.model import Channel
from meterdesk.notifications.tables import notification_channel_settings, notification_outbox
from meterdesk.reports.opening import find_customers
from meterdesk.shared.errors import ValidationError
from meterdesk.sites import service as sites
from meterdesk.sites.tables import customers

pytestmark = pytest.mark.integration

BAD_PHONES = ["138 0013 800", "+86 12345", "abc", "13800138ABC"]
BAD_EMAILS = ["abc@", "a@b", "li lei@example.com"]


def customer_rows(db: Database) -> list[tuple[str, str | None, str | None]]:
    with db.read() as conn:
        rows = conn.execute(
            select(customers.c.name, customers.c.phone, customers.c.email).order_by(customers.c.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def count(db: Database, table: object) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


# --- customers ---------------------------------------------------------------------------------


def test_a_new_customers_phone_and_email_are_stored_normalised(db: Database) -> None:
    org = make_org(db)
    created = sites.create_customer(
        db,
        organisation_id=org.id,
        name="Wang Fang",
        phone=" 138-0013-8000 ",
        email="Wang.Fang@EXAMPLE.com",
    )
    with db.read() as conn:
        row = conn.execute(select(customers).where(customers.c.id == created)).mappings().one()
    assert (row["phone"], row["email"]) == ("+8613800138000", "Wang.Fang@example.com")


@pytest.mark.parametrize("phone", BAD_PHONES)
def test_a_customer_with_a_bad_phone_is_refused_and_nothing_is_stored(
    db: Database, phone: str
) -> None:
    org = make_org(db)
    before = customer_rows(db)
    with pytest.raises(ValidationError, match=f"^phone: {re.escape(repr(phone))} is not"):
        sites.create_customer(db, organisation_id=org.id, name="Wei", phone=phone)
    with pytest.raises(ValidationError, match=f"^phone: {re.escape(repr(phone))} is not"):
        sites.update_customer(
            db,
            organisation_id=org.id,
            customer_id=org.customer_id,
            change=sites.CustomerChange(name="Renamed", phone=phone),
            actor=ACTOR,
        )
    assert customer_rows(db) == before


@pytest.mark.parametrize("email", BAD_EMAILS)
def test_a_customer_with_a_bad_email_is_refused_and_nothing_is_stored(
    db: Database, email: str
) -> None:
    org = make_org(db)
    before = customer_rows(db)
    with pytest.raises(
        ValidationError, match=f"^email: {re.escape(repr(email))} is not an e-mail address"
    ):
        sites.create_customer(db, organisation_id=org.id, name="Wei", email=email)
    with pytest.raises(
        ValidationError, match=f"^email: {re.escape(repr(email))} is not an e-mail address"
    ):
        sites.update_customer(
            db,
            organisation_id=org.id,
            customer_id=org.customer_id,
            change=sites.CustomerChange(email=email),
            actor=ACTOR,
        )
    assert customer_rows(db) == before


def test_an_email_longer_than_its_column_is_refused(db: Database) -> None:
    """email-validator allows 254 characters, the column holds 200; the CLI has no schema that
    would stop a longer one before the database."""
    org = make_org(db)
    long_email = f"{'a' * 60}@{'.'.join(['b' * 45] * 3)}.example.com"
    assert len(long_email) == 210
    before = customer_rows(db)
    with pytest.raises(ValidationError, match=r"^email: at most 200 characters"):
        sites.create_customer(db, organisation_id=org.id, name="Wei", email=long_email)
    assert customer_rows(db) == before


def test_a_changed_phone_is_stored_normalised_and_empty_clears_it(db: Database) -> None:
    org = make_org(db)
    change = sites.CustomerChange(phone="+852 6123 4567", email=" li@Example.com")
    sites.update_customer(
        db, organisation_id=org.id, customer_id=org.customer_id, change=change, actor=ACTOR
    )
    assert customer_rows(db) == [("Li Lei", "+85261234567", "li@example.com")]
    cleared = sites.CustomerChange(phone="", email="")
    sites.update_customer(
        db, organisation_id=org.id, customer_id=org.customer_id, change=cleared, actor=ACTOR
    )
    assert customer_rows(db) == [("Li Lei", None, None)]


@pytest.mark.parametrize("query", ["13900000000", "139 0000 0000", "139-0000-0000", "+86 139"])
def test_a_stored_number_is_found_however_it_is_typed(db: Database, query: str) -> None:
    org = make_org(db)  # Li Lei, +8613900000000
    sites.create_customer(db, organisation_id=org.id, name="Other", phone="13800138000")
    with db.read() as conn:
        console = [row["name"] for row in find_customers(conn, org.id, query)]
        api, _ = list_customers(conn, org.id, query, Window(None, 50))
    assert console == ["Li Lei"]
    assert [row["name"] for row in api] == ["Li Lei"]


def test_a_name_search_still_finds_by_name(db: Database) -> None:
    org = make_org(db)
    with db.read() as conn:
        assert [row["name"] for row in find_customers(conn, org.id, "Lei")] == ["Li Lei"]
        assert find_customers(conn, org.id, "138 0013") == []


# --- presets and imports -----------------------------------------------------------------------


def preset_world(db: Database) -> Org:
    org = make_org(db)
    make_tariff(db, org, "flat", flat_definition("1"))
    for number in ("M1", "M2", "M3"):
        make_meter(db, org, number)
    return org


def preset_data(number: str, meter: str, **extra: str) -> presets.PresetData:
    """As the API builds it from its body (not from a row)."""
    fields = {
        "account_number": number,
        "customer_name": "Han Meimei",
        "site": "Park",
        "building": "B1",
        "floor": "F1",
        "room": "101",
        "meter_numbers": [meter],
        "tariffs": ["flat"],
        **extra,
    }
    return presets.PresetData(**fields)  # type: ignore[arg-type]


def stored_presets(db: Database) -> list[dict[str, object]]:
    with db.read() as conn:
        rows = conn.execute(select(account_presets.c.payload).order_by(account_presets.c.id))
        return [json.loads(payload) for (payload,) in rows]


def test_a_preset_stores_the_customers_phone_and_email_normalised(db: Database) -> None:
    org = preset_world(db)
    data = preset_data("P-1", "M1", customer_phone="0086 138 0013 8000", customer_email="H@X.CN")
    presets.add_preset(db, organisation_id=org.id, data=data)

    [stored] = stored_presets(db)
    assert (stored["customer_phone"], stored["customer_email"]) == ("+8613800138000", "H@x.cn")


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ({"customer_phone": "138 0013 800"}, "customer_phone: '138 0013 800' is not a valid"),
        ({"customer_email": "a@b"}, "customer_email: 'a@b' is not an e-mail address"),
    ],
)
def test_a_preset_with_a_bad_contact_is_refused_and_nothing_is_stored(
    db: Database, extra: dict[str, str], said: str
) -> None:
    org = preset_world(db)
    with pytest.raises(ValidationError, match=f"^{said}"):
        presets.add_preset(db, organisation_id=org.id, data=preset_data("P-1", "M1", **extra))
    with pytest.raises(ValidationError, match=f"^{said}"):
        presets.PresetData.from_row(
            {
                k: ";".join(v) if isinstance(v, list) else v
                for k, v in preset_data("P-1", "M1", **extra).__dict__.items()
            }
        )
    assert stored_presets(db) == []


def test_a_preset_stored_before_the_check_with_a_bad_phone_is_not_opened(db: Database) -> None:
    """Opening it would create a customer whose number no provider can use: refused with the
    reason, nothing opened (the preset stays pending)."""
    org = preset_world(db)
    payload = preset_data("P-OLD", "M1", customer_phone="138 0013 800").__dict__
    with db.transaction() as conn:
        conn.execute(
            insert(account_presets).values(
                organisation_id=org.id,
                account_number="P-OLD",
                payload=json.dumps(payload),
                status="pending",
                created_at=db.clock(),
                opened_account_id=None,
            )
        )
    customers_before = customer_rows(db)

    with pytest.raises(ValidationError, match=r"^customer_phone: '138 0013 800' is not a valid"):
        presets.open_preset(db, organisation_id=org.id, account_number="P-OLD", actor=ACTOR)

    assert customer_rows(db) == customers_before
    assert count(db, accounts) == 0


IMPORT_HEADER = [
    "account_number", "customer_name", "customer_phone", "customer_email", "site", "building",
    "floor", "room", "meter_numbers", "tariffs", "opening_readings",
]  # fmt: skip


def import_rows() -> list[list[object]]:
    """Row 2 good (phone with spaces); 3 a phone a digit short; 4 a bad e-mail; 5 good."""
    place = ["Park", "B1", "F1", "101"]
    return [
        ["A-1", "Han Meimei", "138 0013 8000", "han@example.com", *place, "M1", "flat", "0"],
        ["A-2", "Wei", "138 0013 800", "", *place, "M2", "flat", "0"],
        ["A-3", "Zhou", "13900139000", "zhou@", *place, "M2", "flat", "0"],
        ["A-4", "Sun", "+852 6123 4567", "", *place, "M3", "flat", "0"],
    ]


def assert_contact_rows_reported(db: Database, results: list[presets.RowResult]) -> None:
    assert [(r.row, r.account_number, r.ok) for r in results] == [
        (2, "A-1", True),
        (3, "A-2", False),
        (4, "A-3", False),
        (5, "A-4", True),
    ]
    assert results[1].message.startswith(
        "customer_phone: '138 0013 800' is not a valid number for CN (10 digits; "
        "mainland mobiles have 11)"
    )
    assert results[2].message.startswith("customer_email: 'zhou@' is not an e-mail address")
    stored = [row for row in customer_rows(db) if row[0] != "Li Lei"]
    assert stored == [
        ("Han Meimei", "+8613800138000", "han@example.com"),
        ("Sun", "+85261234567", None),
    ]
    assert count(db, accounts) == 2


def test_a_csv_import_reports_a_bad_phone_or_email_with_its_row_and_opens_the_rest(
    db: Database, tmp_path: Path
) -> None:
    org = preset_world(db)
    path = tmp_path / "accounts.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(IMPORT_HEADER)
        writer.writerows(import_rows())

    results = presets.import_accounts(
        db, organisation_id=org.id, rows=presets.read_rows(path), open_now=True, actor=ACTOR
    )

    assert_contact_rows_reported(db, results)


def test_an_excel_import_reads_a_phone_saved_as_a_number(db: Database, tmp_path: Path) -> None:
    """A phone column Excel formats as a number comes back as an int or, from some writers, a
    float (13800138000.0): it was the 12-digit "13800138000.0"."""
    org = preset_world(db)
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(IMPORT_HEADER)
    rows = import_rows()
    rows[0][2] = 13800138000.0
    rows[3][2] = "+852 6123 4567"
    for row in rows:
        sheet.append(row)
    path = tmp_path / "accounts.xlsx"
    book.save(path)

    results = presets.import_accounts(
        db, organisation_id=org.id, rows=presets.read_rows(path), open_now=True, actor=ACTOR
    )

    assert_contact_rows_reported(db, results)


def test_an_import_that_pre_enters_stores_normalised_contacts(db: Database, tmp_path: Path) -> None:
    org = preset_world(db)
    rows = [dict(zip(IMPORT_HEADER, map(str, row), strict=False)) for row in import_rows()]

    results = presets.import_accounts(
        db, organisation_id=org.id, rows=rows, open_now=False, actor=ACTOR
    )

    assert [r.ok for r in results] == [True, False, False, True]
    assert [(p["customer_phone"], p["customer_email"]) for p in stored_presets(db)] == [
        ("+8613800138000", "han@example.com"),
        ("+85261234567", ""),
    ]


# --- notification addresses --------------------------------------------------------------------


def configure(db: Database, org: Org, channel: str, provider: str, addresses: list[object]) -> None:
    configuration.configure_channel(
        db,
        organisation_id=org.id,
        channel=channel,
        provider=provider,
        config={
            "host": "h",
            "port": 25,
            "sender": "n@example.com",
            "operator_addresses": addresses,
        },
        actor=ACTOR,
    )


def stored_config(db: Database, channel: str) -> dict[str, object]:
    table = notification_channel_settings
    with db.read() as conn:
        found = conn.execute(select(table.c.config).where(table.c.channel == channel)).scalar_one()
    return dict(json.loads(found))


def test_operator_addresses_are_stored_as_they_will_be_sent_to(db: Database) -> None:
    org = make_org(db)
    configure(db, org, "sms", "aliyun", ["139 0000 0000", 13800138000, "", "+852 6123 4567"])
    configure(db, org, "email", "smtp", ["Ops@Example.COM"])

    assert stored_config(db, "sms")["operator_addresses"] == [
        "+8613900000000",
        "+8613800138000",
        "+85261234567",
    ]
    assert stored_config(db, "email")["operator_addresses"] == ["Ops@example.com"]


@pytest.mark.parametrize(
    ("channel", "provider", "addresses", "said"),
    [
        ("sms", "aliyun", ["13900000000", "139"], r"^operator_addresses\[1\]: '139' is not"),
        ("voice", "tencent", ["abc"], r"^operator_addresses\[0\]: 'abc' is not a phone number"),
        ("email", "smtp", ["ops@example.com", "a@b"], r"^operator_addresses\[1\]: 'a@b' is not"),
        ("email", "smtp", "ops@example.com", "operator_addresses must be a list"),
    ],
)
def test_a_bad_operator_address_is_refused_and_the_settings_stay(
    db: Database, channel: str, provider: str, addresses: object, said: str
) -> None:
    org = make_org(db)
    configure(db, org, "email", "smtp", ["ops@example.com"])
    before = count(db, notification_channel_settings)
    with pytest.raises(ValidationError, match=said):
        configure(db, org, channel, provider, addresses)  # type: ignore[arg-type]
    assert count(db, notification_channel_settings) == before
    assert stored_config(db, "email")["operator_addresses"] == ["ops@example.com"]


def test_a_test_message_goes_to_the_normalised_address_or_is_refused(db: Database) -> None:
    org = make_org(db)
    configure(db, org, "sms", "aliyun", [])
    configure(db, org, "email", "smtp", [])

    def send(channel: Channel, address: str) -> int:
        return channel_test.send_test_message(
            db, organisation_id=org.id, channel=channel.value, address=address, language=None,
            actor=ACTOR,
        )  # fmt: skip

    sent = send(Channel.SMS, "138 0013 8000")
    with pytest.raises(ValidationError, match=r"^address: '138 0013 800' is not a valid number"):
        send(Channel.SMS, "138 0013 800")
    with pytest.raises(ValidationError, match=r"^address: 'ops@' is not an e-mail address"):
        send(Channel.EMAIL, "ops@")
    with db.read() as conn:
        rows = conn.execute(select(notification_outbox.c.id, notification_outbox.c.address)).all()
    assert [tuple(row) for row in rows] == [(sent, "+8613800138000")]


def test_an_import_stores_a_new_customers_mini_program_openid_or_reports_a_bad_one(
    db: Database, tmp_path: Path
) -> None:
    org = preset_world(db)
    path = tmp_path / "accounts.csv"
    place = ["Park", "B1", "F1", "101"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*IMPORT_HEADER, "customer_wechat_mini_openid"])
        writer.writerow(
            ["A-1", "Han", "", "", *place, "M1", "flat", "0", " oMINIhan0123456789abcdefgh"]
        )
        writer.writerow(["A-2", "Wei", "", "", *place, "M2", "flat", "0", "wei 138"])
        writer.writerow(["A-3", "Sun", "", "", *place, "M3", "flat", "0", ""])

    results = presets.import_accounts(
        db, organisation_id=org.id, rows=presets.read_rows(path), open_now=True, actor=ACTOR
    )

    assert [(r.row, r.ok) for r in results] == [(2, True), (3, False), (4, True)]
    assert results[1].message.startswith(
        "customer_wechat_mini_openid: 'wei 138' is not a WeChat openid (6 to 64"
    )
    with db.read() as conn:
        stored = conn.execute(
            select(customers.c.name, customers.c.wechat_mini_openid)
            .where(customers.c.name.in_(["Han", "Wei", "Sun"]))
            .order_by(customers.c.id)
        ).all()
    assert [tuple(row) for row in stored] == [("Han", "oMINIhan0123456789abcdefgh"), ("Sun", None)]
