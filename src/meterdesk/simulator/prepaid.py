"""The meter-side prepaid engine and relay state machine of a simulated electricity meter (pure).

Relay: the actual state is *derived*, never stored, so it cannot disagree with its causes::

    relay open  ⇔  not protected  and  (commanded open  or  tripped for credit)

- ``TRIP`` (1A) sets *commanded open*; refused while protected (保电 means never trip).
- ``CLOSE_ALLOWED`` (1B) lifts the command once the user presses the meter button
  (:meth:`PrepaidEngine.press_button`), or at once when the remaining money is above the
  close-allowed amount.
- ``CLOSE`` (1C) lifts the command directly. It does not override a credit trip: a meter that
  bills itself keeps supply off until a recharge brings money above the close-allowed amount.
- ``PROTECT_ON`` (3A) closes the relay and keeps it closed (clears any trip command);
  ``PROTECT_OFF`` (3B) returns to the rules above.
- ``ALARM_ON``/``ALARM_OFF`` (2A/2B) switch the pre-trip alarm indication.

Prepaid (billing mode ``METER``): money is deducted as energy × the price of the band in force;
below ``-overdraft_limit`` the meter trips itself (unless protected) and closes again when money
rises above the close-allowed amount. A recharge is accepted only with purchase count = stored
count + 1 (a replay or a gap is refused) and only if it keeps money within the hoarding limit;
it repays overdraft first simply because money is one signed number. A take-back (退电) is
accepted only with take-back count = stored take-back count + 1 (a counter of its own: the
purchase count is untouched) and an amount of at most the remaining money; it lowers the money
by the amount. In billing mode
``PLATFORM`` the meter only measures and switches: no deduction and no credit trip.

Invariants: ``alarm_1 >= alarm_2 >= 0``; money is exact ``Decimal`` (displayed values are
floored to the fen by the callers); a refused command or recharge changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from enum import IntEnum, StrEnum

from meterdesk.shared.errors import ConflictError
from meterdesk.simulator.profiles import Band

FEN = Decimal("0.01")
PURCHASE_COUNT_MODULUS = 1 << 16  # a UINT16 register


class CommandRefused(ConflictError):  # noqa: N818 - the meter's own word for it
    """The meter refused a command, write or recharge; nothing changed."""


class RelayCommand(IntEnum):
    """N1 of DL/T 645's 1C and the value written to the reference map's 0024H (same codes)."""

    TRIP = 0x1A
    CLOSE_ALLOWED = 0x1B
    CLOSE = 0x1C
    ALARM_ON = 0x2A
    ALARM_OFF = 0x2B
    PROTECT_ON = 0x3A
    PROTECT_OFF = 0x3B


class BillingMode(StrEnum):
    METER = "meter"  # 表端计费: the meter deducts and trips by itself
    PLATFORM = "platform"  # 后台计费: the meter only measures and switches


def floor_fen(amount: Decimal) -> Decimal:
    return amount.quantize(FEN, rounding=ROUND_FLOOR)


@dataclass
class PrepaidSettings:
    """Thresholds in CNY and prices of tariffs 1–4 (sharp, peak, flat, valley) in CNY/kWh."""

    alarm_1: Decimal = Decimal("20.00")
    alarm_2: Decimal = Decimal("10.00")
    overdraft_limit: Decimal = Decimal("0.00")
    hoarding_limit: Decimal = Decimal("5000.00")  # 0 = no limit
    close_allowed_amount: Decimal = Decimal("0.00")
    prices: tuple[Decimal, Decimal, Decimal, Decimal] = (
        Decimal("1.2000"),
        Decimal("1.0000"),
        Decimal("0.7000"),
        Decimal("0.4000"),
    )

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        amounts = (self.alarm_1, self.alarm_2, self.overdraft_limit, self.hoarding_limit)
        if any(amount < 0 for amount in (*amounts, self.close_allowed_amount, *self.prices)):
            raise CommandRefused("prepaid amounts and prices cannot be negative")
        if self.alarm_1 < self.alarm_2:
            raise CommandRefused(f"alarm 1 ({self.alarm_1}) must be >= alarm 2 ({self.alarm_2})")

    def price(self, band: Band) -> Decimal:
        return self.prices[band - 1]


@dataclass
class PrepaidEngine:
    billing: BillingMode = BillingMode.METER
    money: Decimal = Decimal("100.00")
    purchase_count: int = 0
    take_back_count: int = 0  # accepted take-backs (退电), counted apart from purchases
    settings: PrepaidSettings = field(default_factory=PrepaidSettings)
    commanded_open: bool = False
    awaiting_button: bool = False
    protected: bool = False
    alarm_commanded: bool = False
    credit_tripped: bool = False

    @property
    def relay_open(self) -> bool:
        return not self.protected and (self.commanded_open or self.credit_tripped)

    @property
    def bills_itself(self) -> bool:
        return self.billing is BillingMode.METER

    def command(self, command: RelayCommand) -> None:
        """Apply a relay / alarm / protect command, or raise :class:`CommandRefused`."""
        if command is RelayCommand.TRIP:
            if self.protected:
                raise CommandRefused("the meter is protected (保电) and never trips")
            self.commanded_open, self.awaiting_button = True, False
        elif command is RelayCommand.CLOSE_ALLOWED:
            self.awaiting_button = self.commanded_open
        elif command is RelayCommand.CLOSE:
            self.commanded_open = self.awaiting_button = False
        elif command in (RelayCommand.ALARM_ON, RelayCommand.ALARM_OFF):
            self.alarm_commanded = command is RelayCommand.ALARM_ON
        elif command is RelayCommand.PROTECT_ON:
            self.protected = True
            self.commanded_open = self.awaiting_button = False
        else:
            self.protected = False
        self.evaluate()

    def press_button(self) -> None:
        """The user presses the meter's button: supply returns if close was allowed."""
        if self.awaiting_button:
            self.commanded_open = self.awaiting_button = False
        self.evaluate()

    def evaluate(self) -> None:
        """Re-apply the money rules after anything changed money or state."""
        above_close_amount = self.money > self.settings.close_allowed_amount
        if self.awaiting_button and above_close_amount:
            self.commanded_open = self.awaiting_button = False
        if not self.bills_itself:
            self.credit_tripped = False
        elif self.money < -self.settings.overdraft_limit:
            self.credit_tripped = True
        elif self.credit_tripped and above_close_amount:
            self.credit_tripped = False

    def charge(self, energy_kwh: Decimal, band: Band) -> None:
        """Deduct the price of ``energy_kwh`` used in ``band`` (meter billing only)."""
        if self.bills_itself and energy_kwh:
            self.money -= energy_kwh * self.settings.price(band)
            self.evaluate()

    def recharge(self, amount: Decimal, count: int) -> None:
        """Add ``amount`` if ``count`` is the next purchase count, else refuse."""
        expected = (self.purchase_count + 1) % PURCHASE_COUNT_MODULUS
        if count != expected:
            raise CommandRefused(f"purchase count {count} refused: the meter expects {expected}")
        if amount <= 0:
            raise CommandRefused(f"a recharge must be positive, got {amount}")
        limit = self.settings.hoarding_limit
        if limit and self.money + amount > limit:
            raise CommandRefused(f"money would exceed the hoarding limit {limit}")
        self.money += amount
        self.purchase_count = expected
        self.evaluate()

    def take_back(self, amount: Decimal, count: int) -> None:
        """Take ``amount`` back off the meter if ``count`` is the next take-back count and the
        meter holds at least ``amount``, else refuse (nothing changes)."""
        expected = (self.take_back_count + 1) % PURCHASE_COUNT_MODULUS
        if count != expected:
            raise CommandRefused(f"take-back count {count} refused: the meter expects {expected}")
        if amount <= 0:
            raise CommandRefused(f"a take-back must be positive, got {amount}")
        if amount > self.money:
            raise CommandRefused(f"take-back of {amount} refused: the meter holds {self.money}")
        self.money -= amount
        self.take_back_count = expected
        self.evaluate()

    def update_settings(
        self,
        *,
        alarm_1: Decimal | None = None,
        alarm_2: Decimal | None = None,
        overdraft_limit: Decimal | None = None,
        hoarding_limit: Decimal | None = None,
        close_allowed_amount: Decimal | None = None,
        prices: tuple[Decimal, Decimal, Decimal, Decimal] | None = None,
    ) -> None:
        """Change thresholds or prices atomically; an inconsistent result is refused."""
        old = self.settings
        self.settings = PrepaidSettings(
            alarm_1=old.alarm_1 if alarm_1 is None else alarm_1,
            alarm_2=old.alarm_2 if alarm_2 is None else alarm_2,
            overdraft_limit=old.overdraft_limit if overdraft_limit is None else overdraft_limit,
            hoarding_limit=old.hoarding_limit if hoarding_limit is None else hoarding_limit,
            close_allowed_amount=(
                old.close_allowed_amount if close_allowed_amount is None else close_allowed_amount
            ),
            prices=old.prices if prices is None else prices,
        )
        self.evaluate()

    def set_price(self, band: Band, price: Decimal) -> None:
        prices = list(self.settings.prices)
        prices[band - 1] = price
        self.update_settings(prices=(prices[0], prices[1], prices[2], prices[3]))

    @property
    def below_alarm_1(self) -> bool:
        return self.bills_itself and self.money <= self.settings.alarm_1

    @property
    def below_alarm_2(self) -> bool:
        return self.bills_itself and self.money <= self.settings.alarm_2

    @property
    def pre_trip_alarm(self) -> bool:
        return self.alarm_commanded or self.below_alarm_2

    @property
    def displayed_money(self) -> Decimal:
        """Money as the meter shows it: floored to the fen, negative in overdraft."""
        return floor_fen(self.money)
