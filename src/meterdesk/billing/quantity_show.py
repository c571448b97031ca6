"""How a quantity-credit account (购量, decision 0006) is shown by the CLI and the API: one
shape and one way of writing its numbers, so the two never disagree about what a tenant holds.

Quantities and prices are written exactly (a used total is kept to the millionth, a tier price
may have four places), but never with fewer than two places: ``10`` reads ``10.00``, ``9.995``
stays ``9.995``. The money remainder is written the same way: at a price with four places it
is a part of a fen (50.00 at 0.6537 per kWh buys 76.48 kWh and carries 0.005024).
"""

from __future__ import annotations

from decimal import Decimal

from meterdesk.billing import quantity
from meterdesk.billing.quantity import QuantityView
from meterdesk.billing.quantity_model import exact_text
from meterdesk.db.database import Database


def exact(value: Decimal) -> str:
    """A quantity or price with every place it has, at least two, no exponent."""
    return exact_text(value)


def held(db: Database, account_id: int) -> QuantityView | None:
    """The account's quantity now, or None for a money account."""
    with db.read() as conn:
        return quantity.view(conn, account_id) if quantity.is_quantity(conn, account_id) else None


def as_dict(view: QuantityView) -> dict[str, object]:
    """The full view as strings (the API's ``quantity`` object and the CLI's ``--json``). Lots
    are what was bought, in purchase order; the empty blocks (the opening's, a purchase too
    small to buy a step, the place of a recharge reversed) are left out: ``price`` already says
    what use beyond the lots costs."""
    return {
        "unit": view.unit,
        "left": exact(view.left),
        "bought": exact(view.bought),
        "used": exact(view.used),
        "remainder": exact(view.remainder),
        "unused_value": exact(view.unused_value),
        "price": exact(view.price),
        "lots": [
            {"quantity": exact(block.quantity), "price": exact(block.price)}
            for block in view.blocks
            if block.quantity
        ],
    }


def left_dict(view: QuantityView) -> dict[str, str]:
    """What a recharge or refund answer adds: the quantity left after it and the money carried."""
    return {"unit": view.unit, "left": exact(view.left), "remainder": exact(view.remainder)}


def left_text(view: QuantityView) -> str:
    """``10.00 m³ left, 0.03 carried``; ``2.50 m³ used ahead`` in overdraft."""
    amount = (
        f"{exact(view.left)} {view.unit} left"
        if view.left >= 0
        else f"{exact(-view.left)} {view.unit} used ahead"
    )
    return f"{amount}, {exact(view.remainder)} carried"
