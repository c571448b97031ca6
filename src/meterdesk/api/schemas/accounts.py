"""Accounts: opening, presets, bulk import, balance, statement, closing; and the desk's money
calls (recharge, refund, reversal)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from meterdesk.api.schemas.common import (
    EMAIL_RULE,
    ONE_LINE,
    PHONE_RULE,
    BigId,
    Id,
    Money,
    Register,
    SignedMoney,
    examples,
)
from meterdesk.shared.contacts import sms_warning

PaymentMethod = Literal["cash", "card", "transfer", "wechat", "alipay", "online"]
BillingMode = Literal["platform", "meter"]
CreditUnit = Literal["money", "quantity"]
CREDIT_UNIT_RULE = (
    "money (default): the balance is money, use is priced when measured. quantity (购量): "
    "the tenant buys kWh or m³ at the price in force that day (flat or tiered tariff, not "
    "time-of-use), the balance shows quantity left and supply is cut when it is used up; one "
    "meter, platform billing only"
)
Number = Annotated[str, StringConstraints(min_length=1, max_length=64), ONE_LINE]
Reference = Annotated[str, StringConstraints(max_length=200)]


class MeterOpeningIn(BaseModel):
    model_config = examples({"meter_id": 1, "tariff_id": 1, "reading": "1000"})
    meter_id: Id
    tariff_id: Id
    reading: Register | None = Field(
        default=None, description="opening register; omit to start from the last reading"
    )


class AccountIn(BaseModel):
    model_config = examples(
        {
            "number": "A-101",
            "customer_id": 1,
            "room_id": 1,
            "meters": [{"meter_id": 1, "tariff_id": 1, "reading": "1000"}],
            "initial_credit": "0",
        }
    )
    number: Number
    customer_id: Id
    room_id: Id | None = None
    meters: list[MeterOpeningIn] = Field(min_length=1, max_length=50)
    billing_mode: BillingMode = "platform"
    overdraft_limit: Money = "0"
    initial_credit: Money = "0"
    payment_method: PaymentMethod = "cash"
    credit_unit: CreditUnit = Field(default="money", description=CREDIT_UNIT_RULE)


class OpenedAccountOut(BaseModel):
    id: int
    number: str
    meter_ids: list[int]
    initial_transfer_id: Id | None


class AccountOut(BaseModel):
    id: int
    number: str
    customer_id: Id
    customer: str
    room_id: Id | None
    status: str
    billing_mode: str
    opened_at: datetime
    closed_at: datetime | None
    opened_by: str
    balance: SignedMoney
    arrears: SignedMoney
    credit_unit: str = Field(description="money, or quantity (购量)")


Quantity = Annotated[
    str,
    Field(
        description="kWh or m³ (or a price per one), exact, at least two places",
        examples=["10.00"],
    ),
]


class LotOut(BaseModel):
    quantity: Quantity
    price: Quantity


class QuantityOut(BaseModel):
    """What a quantity-credit account (购量) holds. The ledger stays in money: the account's
    ``balance`` is still its wallet's money."""

    unit: Literal["kWh", "m³"]
    left: Quantity = Field(description="bought − used; negative: used ahead (overdraft)")
    bought: Quantity = Field(description="in all since opening, refunds taken off")
    used: Quantity = Field(description="since opening")
    remainder: Quantity = Field(
        description="money carried to the next purchase, exact (may be part of a fen)"
    )
    unused_value: Quantity = Field(description="what the unused quantity cost, exact")
    price: Quantity = Field(description="the last lot's price: what use beyond the lots costs")
    lots: list[LotOut] = Field(description="what was bought, in purchase order")


class QuantityLeftOut(BaseModel):
    unit: Literal["kWh", "m³"]
    left: Quantity = Field(description="right after this call; negative: used ahead")
    remainder: Quantity = Field(
        description="money carried to the next purchase, exact (may be part of a fen)"
    )


class BalanceOut(BaseModel):
    account_id: Id
    number: str
    status: str
    billing_mode: str
    balance: SignedMoney
    arrears: SignedMoney
    overdraft_limit: SignedMoney
    meters: list[str]
    credit_unit: str = Field(description="money, or quantity (购量)")
    quantity: QuantityOut | None = Field(description="null for a money account")


class StatementLineOut(BaseModel):
    at: datetime
    transfer_id: BigId
    reason: str
    memo: str
    meter_id: Id | None
    period_key: str | None
    method: str | None
    balance_change: SignedMoney
    arrears_change: SignedMoney
    balance_after: SignedMoney
    arrears_after: SignedMoney


class StatementOut(BaseModel):
    account_id: Id
    number: str
    start: datetime
    end: datetime
    opening_balance: SignedMoney
    opening_arrears: SignedMoney
    closing_balance: SignedMoney
    closing_arrears: SignedMoney
    totals: dict[str, SignedMoney]
    lines: list[StatementLineOut]


class FinalReadingIn(BaseModel):
    model_config = examples({"meter_id": 1, "total": "1100.5"})
    meter_id: Id
    total: Register
    bands: dict[str, Register] | None = None


class CloseIn(BaseModel):
    model_config = examples(
        {"final_readings": [{"meter_id": 1, "total": "1100.5"}], "refund_method": "cash"}
    )
    final_readings: list[FinalReadingIn] = Field(min_length=1, max_length=50)
    refund_method: PaymentMethod = "cash"


class ClosedOut(BaseModel):
    account_id: Id
    number: str
    refunded: SignedMoney
    arrears: SignedMoney
    refund_transfer_id: Id | None


class PresetIn(BaseModel):
    model_config = examples(
        {
            "account_number": "A-102",
            "customer_name": "Han Meimei",
            "site": "North Park",
            "building": "B1",
            "floor": "F1",
            "room": "102",
            "meter_numbers": ["E-102"],
            "tariffs": ["Shop flat"],
        }
    )
    account_number: Number
    customer_name: Annotated[str, StringConstraints(min_length=1, max_length=200), ONE_LINE]
    site: Annotated[str, StringConstraints(min_length=1, max_length=200), ONE_LINE]
    building: Annotated[str, StringConstraints(min_length=1, max_length=200), ONE_LINE]
    floor: Annotated[str, StringConstraints(min_length=1, max_length=100), ONE_LINE]
    room: Annotated[str, StringConstraints(min_length=1, max_length=100), ONE_LINE]
    meter_numbers: list[
        Annotated[str, StringConstraints(min_length=1, max_length=64), ONE_LINE]
    ] = Field(min_length=1, max_length=50)
    tariffs: list[Annotated[str, StringConstraints(min_length=1, max_length=200), ONE_LINE]] = (
        Field(min_length=1, max_length=50)
    )
    opening_readings: list[Register | Literal[""]] = Field(default_factory=list, max_length=50)
    customer_phone: Annotated[str, StringConstraints(max_length=40)] = Field(
        default="", description=PHONE_RULE
    )
    customer_email: Annotated[str, StringConstraints(max_length=200)] = Field(
        default="", description=EMAIL_RULE
    )
    initial_credit: Money = "0"
    overdraft_limit: Money = "0"
    billing_mode: BillingMode = "platform"
    payment_method: PaymentMethod = "cash"
    credit_unit: CreditUnit = Field(default="money", description=CREDIT_UNIT_RULE)
    customer_wechat_mini_openid: Annotated[str, StringConstraints(max_length=64)] = Field(
        default="",
        description="the mini program's openid (小程序): 6 to 64 letters, digits, _ or -",
    )


class PresetOut(BaseModel):
    id: int
    account_number: str
    status: str
    created_at: datetime
    opened_account_id: Id | None
    data: dict[str, object]
    phone_warning: str | None = Field(
        default=None,
        description="set when the pre-entered phone is a landline: accepted (voice calls reach "
        "it), but SMS cannot, so SMS to the tenant fail with this reason; add a mobile number",
    )

    @model_validator(mode="before")
    @classmethod
    def _warned(cls, row: Any) -> Any:
        """Whether SMS can reach the pre-entered phone (a landline is accepted, so the caller
        is told here, as for a customer)."""
        if isinstance(row, Mapping) and isinstance(row.get("data"), Mapping):
            phone = row["data"].get("customer_phone")
            stored = phone if isinstance(phone, str) else None
            return {**row, "phone_warning": sms_warning(stored, field="customer_phone")}
        return row


class ImportRowOut(BaseModel):
    row: int
    account_number: str
    ok: bool
    message: str
    phone_warning: str | None = Field(
        default=None,
        description="set on a row done with a landline as customer_phone: accepted (voice calls "
        "reach it), but SMS cannot, so SMS to the tenant fail with this reason; add a mobile",
    )


class ImportOut(BaseModel):
    opened: bool
    ok: int
    failed: int
    rows: list[ImportRowOut]


# -- the desk ------------------------------------------------------------------------------------


class MoneyIn(BaseModel):
    model_config = examples({"amount": "100.00", "method": "cash"})
    amount: Money
    method: PaymentMethod = "cash"
    reference: Reference | None = None


class MoneyOut(BaseModel):
    account_id: Id
    transfer_id: BigId
    amount: SignedMoney
    balance: SignedMoney = Field(description="the wallet balance right after this call")
    arrears: SignedMoney
    quantity: QuantityLeftOut | None = Field(
        default=None, description="a quantity-credit account's (购量) quantity left; else null"
    )


class ReversalIn(BaseModel):
    model_config = examples({"memo": "entered twice"})
    memo: Annotated[str, StringConstraints(max_length=300)] | None = None


class ReversalOut(BaseModel):
    transfer_id: BigId
    reversal_transfer_id: Id


class TariffChangeIn(BaseModel):
    model_config = examples({"tariff_id": 1})
    tariff_id: Id = Field(description="a tariff of your organisation for the meter's utility")


class MeterTariffOut(BaseModel):
    account_id: Id
    account_number: str
    meter_id: Id
    meter_number: str
    tariff_id: Id
    tariff: str
    since: datetime = Field(description="the current tariff applies from this instant")
    change_from: datetime = Field(
        description="a change made now applies from this instant: the meter's latest accepted "
        "reading (or the opening reading when there is none since)"
    )


class TariffChangeOut(BaseModel):
    account_id: Id
    account_number: str
    meter_id: Id
    meter_number: str
    previous_tariff_id: Id
    previous_tariff: str
    tariff_id: Id
    tariff: str
    effective_at: datetime = Field(
        description="the new tariff prices every interval after this instant (the meter's reading "
        "at the switch); when nothing changed, the instant the current tariff applies from"
    )
    changed: bool = Field(description="false: the meter already had this tariff")
    change_id: Id | None
    message: str
