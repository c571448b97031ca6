"""``[[meters]]`` groups of the simulator config → one spec per meter (see :mod:`.config`).

Initial registers and money that the file does not give come from the seed, per meter, so a
building starts with plausible, different, reproducible values: 100–5000 kWh split over the
bands (10 % sharp, 30 % peak, 35 % flat, the rest valley), 50–300 CNY, 10–500 m³.

Checks: the kind fits the bus protocol (electricity on dlt645 / modbus / modbus-rtu, water on
cjt188), the address fits the protocol (12 digits, 14 digits, unit id 1–247), and an address is
used once per bus and once per gateway and kind.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from datetime import tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from meterdesk.devices.codecs.cjt188 import DiOrder
from meterdesk.shared.errors import ValidationError
from meterdesk.simulator.meter import DEFAULT_MODULUS, ElectricitySpec, WaterSpec
from meterdesk.simulator.prepaid import BillingMode, CommandRefused, PrepaidSettings
from meterdesk.simulator.profiles import LoadProfile

Table = Mapping[str, Any]
MeterEntry = tuple[ElectricitySpec | WaterSpec, str | None, str | None]
COMMON_KEYS = {"first_address", "count", "kind", "profile", "bus", "gateway", "modulus"}
ELECTRICITY_KEYS = COMMON_KEYS | {
    "rated_kw", "phases", "ct", "pt", "billing", "money", "energy_kwh", "alarm_1", "alarm_2",
    "overdraft_limit", "hoarding_limit", "close_allowed_amount", "prices",
}  # fmt: skip
WATER_KEYS = COMMON_KEYS | {"rated_flow_m3h", "volume_m3", "valve_delay_s", "di_order"}
MAX_ADDRESS = {"dlt645": 10**12 - 1, "modbus": 247, "modbus-rtu": 247, "cjt188": 10**14 - 1}
KIND_PROTOCOLS = {"electricity": {"dlt645", "modbus", "modbus-rtu"}, "water": {"cjt188"}}
BAND_SHARES = (Decimal("0.10"), Decimal("0.30"), Decimal("0.35"))
CENT = Decimal("0.01")


def _decimal(
    table: Table, key: str, default: Decimal | None, where: str, *, exact: bool
) -> Decimal | None:
    """A decimal from a string or integer; floats only for physical quantities (``exact=False``)."""
    value = table.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or (exact and isinstance(value, float)):
        raise ValidationError(
            f'{where}: give {key} as a decimal string such as "12.34", not {value!r}'
        )
    try:
        result = Decimal(str(value))
    except InvalidOperation:
        raise ValidationError(f"{where}: {key} = {value!r} is not a number") from None
    if not result.is_finite() or result < 0:
        raise ValidationError(f"{where}: {key} must be a non-negative number")
    return result


def _required(value: Decimal | None) -> Decimal:
    assert value is not None  # every caller passes a default
    return value


def _enum_value(enum: Any, table: Table, key: str, default: str, where: str) -> Any:
    try:
        return enum(table.get(key, default))
    except ValueError:
        raise ValidationError(
            f"{where}: {key} must be one of {[item.value for item in enum]}"
        ) from None


def _bands(total: Decimal) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    sharp, peak, flat = ((total * share).quantize(CENT) for share in BAND_SHARES)
    return sharp, peak, flat, total - sharp - peak - flat


def _settings(table: Table, where: str) -> PrepaidSettings:
    base = PrepaidSettings()
    prices = table.get("prices")
    if prices is not None and (not isinstance(prices, list) or len(prices) != 4):
        raise ValidationError(f"{where}: prices must list four decimal strings (tariffs 1–4)")
    price_values = tuple(
        _required(_decimal({"price": text}, "price", None, where, exact=True))
        for text in prices or base.prices
    )
    try:
        return PrepaidSettings(
            alarm_1=_required(_decimal(table, "alarm_1", base.alarm_1, where, exact=True)),
            alarm_2=_required(_decimal(table, "alarm_2", base.alarm_2, where, exact=True)),
            overdraft_limit=_required(
                _decimal(table, "overdraft_limit", base.overdraft_limit, where, exact=True)
            ),
            hoarding_limit=_required(
                _decimal(table, "hoarding_limit", base.hoarding_limit, where, exact=True)
            ),
            close_allowed_amount=_required(
                _decimal(
                    table, "close_allowed_amount", base.close_allowed_amount, where, exact=True
                )
            ),
            prices=(price_values[0], price_values[1], price_values[2], price_values[3]),
        )
    except CommandRefused as refused:
        raise ValidationError(f"{where}: {refused}") from None


def _electricity(
    table: Table, address: int, rng: random.Random, common: dict[str, Any], where: str
) -> ElectricitySpec:
    energy = _decimal(table, "energy_kwh", None, where, exact=True)
    if energy is None:
        energy = Decimal(rng.randrange(10_000, 500_000)).scaleb(-2)
    money = _decimal(table, "money", None, where, exact=True)
    if money is None:
        money = Decimal(rng.randrange(5_000, 30_000)).scaleb(-2)
    phases = table.get("phases", 1)
    if phases not in (1, 3):
        raise ValidationError(f"{where}: phases must be 1 or 3")
    return ElectricitySpec(
        address=address,
        rated_kw=_required(_decimal(table, "rated_kw", Decimal(5), where, exact=False)),
        phases=phases,
        ct=_required(_decimal(table, "ct", Decimal(1), where, exact=False)),
        pt=_required(_decimal(table, "pt", Decimal(1), where, exact=False)),
        band_energy_kwh=_bands(energy),
        billing=_enum_value(BillingMode, table, "billing", "meter", where),
        money=money,
        settings=_settings(table, where),
        **common,
    )


def _water(
    table: Table, address: int, rng: random.Random, common: dict[str, Any], where: str
) -> WaterSpec:
    volume = _decimal(table, "volume_m3", None, where, exact=True)
    if volume is None:
        volume = Decimal(rng.randrange(1_000, 50_000)).scaleb(-2)
    delay = table.get("valve_delay_s", 8.0)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise ValidationError(f"{where}: valve_delay_s must be a non-negative number of seconds")
    return WaterSpec(
        address=address,
        rated_flow_m3h=_required(
            _decimal(table, "rated_flow_m3h", Decimal("0.5"), where, exact=False)
        ),
        volume_m3=volume,
        valve_delay_s=float(delay),
        di_order=_enum_value(DiOrder, table, "di_order", "high_first", where),
        **common,
    )


class _Registry:
    """Addresses already used per bus and per (gateway, kind)."""

    def __init__(self, buses: Mapping[str, str], gateways: set[str]) -> None:
        self.buses, self.gateways = buses, gateways
        self.used: set[tuple[str, str, int]] = set()

    def claim(
        self, kind: str, address: int, bus: str | None, gateway: str | None, where: str
    ) -> None:
        if bus is not None:
            protocol = self.buses.get(bus)
            if protocol is None:
                raise ValidationError(f"{where}: no bus named {bus!r}")
            if protocol not in KIND_PROTOCOLS[kind]:
                raise ValidationError(f"{where}: {kind} meters cannot be on a {protocol} bus")
            if not 1 <= address <= MAX_ADDRESS[protocol]:
                raise ValidationError(f"{where}: address {address} does not fit {protocol}")
            self._once(("bus", bus, address), where)
        if gateway is not None:
            if gateway not in self.gateways:
                raise ValidationError(f"{where}: no gateway {gateway!r}")
            self._once((f"gateway:{kind}", gateway, address), where)
        if not 1 <= address <= MAX_ADDRESS["cjt188" if kind == "water" else "dlt645"]:
            raise ValidationError(f"{where}: address {address} is out of range")

    def _once(self, key: tuple[str, str, int], where: str) -> None:
        if key in self.used:
            raise ValidationError(f"{where}: address {key[2]} is used twice on {key[1]}")
        self.used.add(key)


def _group(table: Table, seed: int, zone: tzinfo, registry: _Registry) -> Iterable[MeterEntry]:
    where = f"[[meters]] first_address {table.get('first_address', '?')}"
    kind = table.get("kind", "electricity")
    if kind not in KIND_PROTOCOLS:
        raise ValidationError(f"{where}: kind must be electricity or water")
    unknown = set(table) - (ELECTRICITY_KEYS if kind == "electricity" else WATER_KEYS)
    if unknown:
        raise ValidationError(f"{where}: unknown keys for {kind} meters: {sorted(unknown)}")
    first, count = table.get("first_address"), table.get("count", 1)
    if not isinstance(first, int) or not isinstance(count, int) or count < 1:
        raise ValidationError(f"{where}: first_address and count must be positive integers")
    bus, gateway = table.get("bus"), table.get("gateway")
    profile = _enum_value(LoadProfile, table, "profile", "apartment", where)
    modulus = _required(_decimal(table, "modulus", DEFAULT_MODULUS, where, exact=True))
    for address in range(first, first + count):
        registry.claim(kind, address, bus, gateway, where)
        key = f"{bus or gateway}:{address}"
        rng = random.Random(f"{seed}:{kind}:{key}:initial")  # noqa: S311 - sample values
        common = {"key": key, "profile": profile, "zone": zone, "seed": seed, "modulus": modulus}
        build = _electricity if kind == "electricity" else _water
        yield build(table, address, rng, common, where), bus, gateway


def build_meters(
    groups: Iterable[Table],
    *,
    seed: int,
    zone: tzinfo,
    buses: Mapping[str, str],
    gateways: set[str],
) -> list[MeterEntry]:
    registry = _Registry(buses, gateways)
    return [entry for table in groups for entry in _group(table, seed, zone, registry)]
