"""Which provider template a message goes out with (SMS, voice, WeChat).

Providers send only pre-approved templates, each with its own variables. A quantity-credit
account (购量) holds kWh or m³, so its messages carry ``quantity_left`` and ``unit`` instead of
the money values ``balance`` and ``threshold``. A template approved as "余额为 ${balance} 元"
would go out as "余额为  元": a message that arrives and says nothing. So:

- a channel's ``templates`` may hold a second entry per key, ``<key>.quantity``, used for the
  messages of quantity accounts (approved with ``quantity_left`` and ``unit``);
- without one, the plain ``<key>`` serves both kinds of account only if it names no money value;
  if it does, a quantity account's message fails at once with the reason (operators see it in
  the notification log and can register the template, then retry), instead of reaching the
  tenant with a blank where the amount should be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from meterdesk.notifications.channels.base import OutgoingMessage, PermanentDeliveryError

QUANTITY_SUFFIX = ".quantity"
#: The display values a quantity account's message does not carry (it has quantity_left, unit).
MONEY_VALUES = frozenset({"balance", "threshold"})

Ref = TypeVar("Ref")


def is_quantity(message: OutgoingMessage) -> bool:
    """A message of a quantity-credit account: the control loop and the desk give it
    ``quantity_left`` where a money account's has ``balance``."""
    return "quantity_left" in message.params


def choose(
    refs: Mapping[str, Ref],
    message: OutgoingMessage,
    names: Callable[[Ref], Iterable[str]],
) -> Ref:
    """The template for ``message``; ``names`` lists the display values a template fills."""
    key = message.template_key
    if is_quantity(message):
        quantity_ref = refs.get(key + QUANTITY_SUFFIX)
        if quantity_ref is not None:
            return quantity_ref
    ref = refs.get(key)
    if ref is None:
        raise PermanentDeliveryError(f"{message.channel}: no provider template for {key!r}")
    if is_quantity(message):
        money = sorted(MONEY_VALUES.intersection(names(ref)))
        if money:
            raise PermanentDeliveryError(
                f"{message.channel}: provider template {key!r} fills {', '.join(money)}, which "
                f"a quantity-credit account's message does not have; register "
                f"{key + QUANTITY_SUFFIX!r} with quantity_left and unit"
            )
    return ref
