"""A command's parameters: validating a request (unknown parameters refused), splitting a stored
row's parameters into the spec and its context, and the four-price table a tariff version makes.
Pure, like ``model.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from meterdesk.devices.commands.model import CommandKind, CommandSpec, parse_kind
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.money import parse_money, parse_positive_money, parse_price
from meterdesk.tariffs.model import Band, TariffVersion

REGISTER_PRICE_PLACES = 4  # DL/T 645 XXXX.XXXX, reference map 0.0001 CNY/kWh
PRICE_SLOTS = ("sharp", "peak", "flat", "valley")  # tariff 1–4 by Chinese convention
LIMIT_NAMES = ("alarm_1", "alarm_2", "overdraft_limit", "hoarding_limit", "close_allowed")


SPEC_KEYS: Mapping[CommandKind, set[str]] = {
    CommandKind.WRITE_PRICES: {"prices"},
    CommandKind.WRITE_LIMITS: {"limits"},
    CommandKind.RECHARGE: {"amount", "purchase_count", "transfer_id"},
    CommandKind.TAKE_BACK: {"amount", "all", "take_back_count", "account_id"},
}


def split_stored(
    kind: object, params: Mapping[str, object]
) -> tuple[CommandSpec, dict[str, object]]:
    """A stored row's parameters: the spec, and the context beside it (why the command was
    made, for which account …) that other writers such as the control loop keep there."""
    parsed = parse_kind(kind)
    keys = SPEC_KEYS.get(parsed, set())
    spec = parse_spec(parsed, {k: v for k, v in params.items() if k in keys})
    return spec, {k: v for k, v in params.items() if k not in keys}


def parse_context(context: Mapping[str, object] | None, kind: CommandKind) -> dict[str, object]:
    """Informational parameters (not part of the desired state): plain JSON scalars only."""
    given = dict(context or {})
    for key, value in given.items():
        if key in SPEC_KEYS.get(kind, set()) or key == "request_hash":
            raise ValidationError(f"context: {key!r} is a command parameter, not context")
        if value is not None and not isinstance(value, str | int | bool):
            raise ValidationError(f"context.{key}: a string or a whole number")
    return given


def parse_spec(kind: object, params: Mapping[str, object] | None) -> CommandSpec:
    """Validate a command request; unknown parameters are refused (a typo must not vanish)."""
    parsed = parse_kind(kind)
    given = dict(params or {})
    unknown = sorted(set(given) - SPEC_KEYS.get(parsed, set()))
    if unknown:
        raise ValidationError(f"params: {parsed.value} takes no parameter {unknown[0]!r}")
    if parsed is CommandKind.WRITE_PRICES:
        return CommandSpec(parsed, prices=_prices(given.get("prices")))
    if parsed is CommandKind.WRITE_LIMITS:
        return CommandSpec(parsed, limits=_limits(given.get("limits")))
    if parsed is CommandKind.RECHARGE:
        return CommandSpec(
            parsed,
            amount=parse_positive_money(given.get("amount"), field="params.amount"),
            purchase_count=_optional_count(given.get("purchase_count")),
            transfer_id=_optional_count(given.get("transfer_id"), field="transfer_id"),
        )
    if parsed is CommandKind.TAKE_BACK:
        return _take_back(given)
    return CommandSpec(parsed)


def _take_back(given: Mapping[str, object]) -> CommandSpec:
    """A take-back of an amount, or of ``all`` the meter holds (then an amount appears only once
    the executor fixed it, just before the first send)."""
    take_all = given.get("all", False)
    if not isinstance(take_all, bool):
        raise ValidationError("params.all: true or false")
    amount = given.get("amount")
    if not take_all and amount is None:
        raise ValidationError("params: give an amount to take back, or all")
    return CommandSpec(
        CommandKind.TAKE_BACK,
        amount=None if amount is None else parse_positive_money(amount, field="params.amount"),
        take_all=take_all,
        take_back_count=_optional_count(given.get("take_back_count"), field="take_back_count"),
        account_id=_optional_count(given.get("account_id"), field="account_id"),
    )


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not value:
        raise ValidationError(f"{where}: give a non-empty mapping")
    return value


def _prices(value: object) -> dict[str, Decimal]:
    prices: dict[str, Decimal] = {}
    for slot, raw in _mapping(value, "params.prices").items():
        if slot not in PRICE_SLOTS:
            raise ValidationError(f"params.prices: {slot!r} is not one of {', '.join(PRICE_SLOTS)}")
        price = parse_price(raw, field=f"params.prices.{slot}")
        if price != price.quantize(Decimal(1).scaleb(-REGISTER_PRICE_PLACES)):
            raise ValidationError(
                f"params.prices.{slot}: {price} has more than {REGISTER_PRICE_PLACES} decimal "
                "places; the meter's price register cannot hold it exactly"
            )
        prices[slot] = price
    return {slot: prices[slot] for slot in PRICE_SLOTS if slot in prices}


def _limits(value: object) -> dict[str, Decimal]:
    limits: dict[str, Decimal] = {}
    for name, raw in _mapping(value, "params.limits").items():
        if name not in LIMIT_NAMES:
            raise ValidationError(f"params.limits: {name!r} is not one of {', '.join(LIMIT_NAMES)}")
        limits[name] = parse_money(raw, field=f"params.limits.{name}")
        if limits[name] < 0:
            raise ValidationError(f"params.limits.{name}: cannot be negative")
    if "alarm_1" in limits and "alarm_2" in limits and limits["alarm_1"] < limits["alarm_2"]:
        raise ValidationError(
            "params.limits: alarm_1 must be at least alarm_2 (alarm 1 comes first)"
        )
    return {name: limits[name] for name in LIMIT_NAMES if name in limits}


def _optional_count(value: object, *, field: str = "purchase_count") -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"params.{field}: a whole number of at least 1")
    return value


def meter_price_table(version: TariffVersion) -> dict[str, Decimal]:
    """The price table a meter-billing meter needs for a tariff version (tariff 1–4 = sharp,
    peak, flat, valley). A flat tariff writes its one price to all four slots, so whichever
    slot the meter's own schedule uses, the price is the same."""
    if version.tiers is not None:
        raise ValidationError("a tiered tariff cannot be written to a meter's four-price table")
    if Band.DEEP_VALLEY in version.prices:
        raise ValidationError("the meter's price table has no deep-valley slot")
    if not version.seasons:
        prices = dict.fromkeys(PRICE_SLOTS, version.prices[Band.FLAT])
    else:
        prices = {band.value: price for band, price in version.prices.items()}
    return _prices(prices)
