"""Building blocks shared by every area's schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, cast

from annotated_types import Ge, Le
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
)

from meterdesk.shared.text import control_character_in_one_line

# Ids fit the database's integer columns (PostgreSQL INTEGER; transfers are BIGINT).
Id = Annotated[int, Ge(1), Le(2**31 - 1)]
BigId = Annotated[int, Ge(1), Le(2**63 - 1)]
# [0-9], not \d: the regex engine's \d takes any script's digits ("１０００", "١٠٠"), which
# Decimal() then reads as numbers nobody typed at a till.
MONEY_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,2})?$"

Money = Annotated[
    str,
    StringConstraints(pattern=MONEY_PATTERN),
    Field(description="yuan as a decimal string with at most two places", examples=["100.00"]),
]
SignedMoney = Annotated[
    str, Field(description="yuan as a decimal string, two places", examples=["-12.30"])
]
Register = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{1,14}(\.[0-9]{1,4})?$"),
    Field(
        description="a register value as a decimal string, at most 4 places", examples=["1234.5"]
    ),
]
Ratio = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9]{1,9}(\.[0-9]{1,2})?$"),
    Field(description="a positive ratio as a decimal string", examples=["1"]),
]


def _one_line(value: str) -> str:
    found = control_character_in_one_line(value)
    if found:
        raise ValueError(f"one line of text: no tab or line break ({found})")
    return value


# Names, numbers and other one-line identifiers: no tab or line break (other control characters
# are refused in every request by api/text_guard.py). A name with a newline split the CLI's
# lines, SMS texts and spreadsheet rows that print it.
ONE_LINE = AfterValidator(_one_line)
Name = Annotated[str, StringConstraints(min_length=1, max_length=200), ONE_LINE]


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise ValueError("out of range once in UTC") from None


# Every instant a request gives: with an offset, and one that exists in UTC (a reading at
# 9999-12-31T23:59:59-12:00 raised OverflowError in the handler: a 500).
Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]


def examples(*values: dict[str, Any]) -> ConfigDict:
    """Config for a request body: unknown fields refused; ``values`` shown in the docs (and used
    by the API tests to build requests for every route)."""
    return ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={"examples": cast(list[JsonValue], list(values))},
    )


class Created(BaseModel):
    id: int


# Phones and e-mails are checked and normalised by the services (shared/contacts.py).
PHONE_RULE = (
    "a valid phone number (libphonenumber's rules): read in CN unless it starts with + and a "
    "country code; spaces, dashes and brackets allowed, letters not; stored and returned as E.164 "
    "(+8613900000000)"
)
EMAIL_RULE = "an e-mail address (syntax only, no DNS look-up); stored with its domain lower-cased"
