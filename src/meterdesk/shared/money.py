"""Exact money and quantities.

Invariants:
- Money is a ``Decimal`` with exactly two places (whole fen); it is never built from a float.
- Prices carry up to six places, register values and quantities up to six.
- Rounding to fen happens only in :func:`round_fen` (ROUND_HALF_UP, as Chinese billing practice
  and GB/T 8170 expect); everything before it is exact.
- Arithmetic on priced quantities runs in :data:`EXACT`, a context that raises instead of
  rounding, so an inexact intermediate result is a bug that shows itself.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, InvalidOperation, Rounded

from meterdesk.shared.errors import ValidationError

FEN = Decimal("0.01")
PRICE_PLACES = 6
QUANTITY_PLACES = 6
CURRENCY = "CNY"

# The largest amount anyone may enter: twelve digits of yuan, as the API's pattern allows. Far
# below what the fen columns (BIGINT) hold, and small enough that quantizing never overflows
# the default decimal context (28 digits), which raised InvalidOperation for "1e30".
MAX_MONEY = Decimal("999999999999.99")
# The largest price per unit (kWh, m³), as a meter's price table takes it (6 digits of yuan).
# A tariff priced at 10^40 was stored, and every reading of its meters then failed its ingest
# batch: the charge overflowed the fen column.
MAX_PRICE = Decimal("999999.999999")
# Money typed as text: plain ASCII decimal notation. Decimal() also takes "1e3", "١٠٠" (any
# script's digits) and "1_000", which the API's pattern refuses; the CLI and imports must too.
_PLAIN_DECIMAL = re.compile(r"[+-]?[0-9]+(\.[0-9]*)?|[+-]?\.[0-9]+")

# Wide enough for any product of a quantity and a price; traps make silent rounding impossible.
EXACT = Context(prec=60, traps=[Inexact, Rounded, InvalidOperation])


def to_decimal(value: object, *, field: str = "value") -> Decimal:
    """Build a Decimal from str/int/Decimal only; floats are refused because they are not exact."""
    if isinstance(value, bool | float):
        raise ValidationError(f"{field}: give a decimal string, not a float ({value!r})")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValidationError(f"{field}: {value!r} is not a decimal number") from None
    else:
        raise ValidationError(f"{field}: expected a decimal string, got {type(value).__name__}")
    if not result.is_finite():
        raise ValidationError(f"{field}: {value!r} is not a finite number")
    return result


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite values only, checked by to_decimal
    return max(0, -exponent)


def parse_money(value: object, *, field: str = "amount") -> Decimal:
    """A money amount in yuan with at most two places, returned with exactly two places."""
    if isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(value.strip()):
        raise ValidationError(f"{field}: {value!r} is not a decimal number like 100.00")
    amount = to_decimal(value, field=field)
    if abs(amount) > MAX_MONEY:
        raise ValidationError(f"{field}: {value} is more than {MAX_MONEY}")
    if _places(amount.normalize()) > 2:
        raise ValidationError(f"{field}: {value} has more than two decimal places (whole fen only)")
    return amount.quantize(FEN)


def parse_unsigned_money(value: object, *, field: str = "amount") -> Decimal:
    """Money that cannot be below zero (a threshold, a credit on offer), as the API's pattern."""
    amount = parse_money(value, field=field)
    if amount < 0:
        raise ValidationError(f"{field}: cannot be negative, got {amount}")
    return amount


def parse_positive_money(value: object, *, field: str = "amount") -> Decimal:
    amount = parse_money(value, field=field)
    if amount <= 0:
        raise ValidationError(f"{field}: must be greater than zero, got {amount}")
    return amount


def parse_price(value: object, *, field: str = "price") -> Decimal:
    if isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(value.strip()):
        raise ValidationError(f"{field}: {value!r} is not a decimal number like 0.6537")
    price = to_decimal(value, field=field)
    if price < 0:
        raise ValidationError(f"{field}: a price cannot be negative ({price})")
    if price > MAX_PRICE:
        raise ValidationError(f"{field}: {value} is more than {MAX_PRICE} per unit")
    if _places(price.normalize()) > PRICE_PLACES:
        raise ValidationError(f"{field}: {value} has more than {PRICE_PLACES} decimal places")
    return price


def parse_quantity(value: object, *, field: str = "quantity") -> Decimal:
    quantity = to_decimal(value, field=field)
    if _places(quantity.normalize()) > QUANTITY_PLACES:
        raise ValidationError(f"{field}: {value} has more than {QUANTITY_PLACES} decimal places")
    return quantity


def round_fen(exact: Decimal) -> Decimal:
    """The one place where an exact amount becomes whole fen."""
    return exact.quantize(FEN, rounding=ROUND_HALF_UP)


def to_fen(amount: Decimal) -> int:
    """Whole fen as an integer, for storage; refuses anything that is not whole fen."""
    scaled = amount.scaleb(2)
    if scaled != scaled.to_integral_value():
        raise ValidationError(f"{amount} is not a whole number of fen")
    return int(scaled)


def from_fen(fen: int) -> Decimal:
    return Decimal(fen).scaleb(-2).quantize(FEN)


def format_money(amount: Decimal) -> str:
    """Money as the string the API and CLI show: two places, no exponent."""
    return f"{amount.quantize(FEN):f}"
