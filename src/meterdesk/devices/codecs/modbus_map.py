"""Modbus register maps as data: typed, scaled decoding, read planning and write encoding.

A map file (``devices/maps/<name>.json``) lists registers with protocol address, type
(UINT16/INT16/UINT32/INT32), scale, unit, meaning, the transformer factor that applies
(``CT*PT`` for energy and power, ``CT`` for current, ``PT`` for voltage) and read/write flags.
Vendor models differ only in their file; this module knows no vendor.

Invariants:
- Pure: no pymodbus, no sockets. Registers are plain ``int`` words 0..65535.
- 32-bit values are high word first; signed types are two's complement.
- A scaled value is ``Decimal(raw) × scale × factor`` — exact, never float, never rounded;
  a register without a scale decodes to a plain ``int`` and has no factor.
- A write refuses a value that is not a whole number of the register's scale and a value
  out of range for its type, instead of rounding or wrapping.
- :meth:`RegisterMap.plan_reads` never splits a register across reads, never reads more than
  125 registers at once and only bridges gaps made entirely of readable mapped registers.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from importlib import resources
from typing import Any

from meterdesk.shared.errors import ValidationError

MAX_READ_REGISTERS = 125
RECHARGE_AMOUNT = "recharge_amount_cny"
RECHARGE_COUNT = "recharge_purchase_count"
TAKE_BACK_AMOUNT = "take_back_amount_cny"
TAKE_BACK_REQUEST_COUNT = "take_back_request_count"
TAKE_BACK_COUNT = "take_back_count"  # read: accepted take-backs so far


class ModbusMapError(ValidationError):
    """A map file, register name, register value or write that does not fit the map."""


class RegisterType(Enum):
    UINT16 = "UINT16"
    INT16 = "INT16"
    UINT32 = "UINT32"
    INT32 = "INT32"

    @property
    def count(self) -> int:
        return 2 if self.value.endswith("32") else 1

    @property
    def signed(self) -> bool:
        return self.value.startswith("INT")

    @property
    def bounds(self) -> tuple[int, int]:
        bits = 16 * self.count
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.signed else (0, (1 << bits) - 1)


class Factor(Enum):
    NONE = None
    CT = "CT"
    PT = "PT"
    CT_PT = "CT*PT"

    def multiplier(self, ct: Decimal, pt: Decimal) -> Decimal:
        return {Factor.NONE: Decimal(1), Factor.CT: ct, Factor.PT: pt, Factor.CT_PT: ct * pt}[self]


@dataclass(frozen=True, slots=True)
class Register:
    name: str
    address: int
    type: RegisterType
    scale: Decimal | None
    unit: str
    meaning: str
    factor: Factor = Factor.NONE
    writable: bool = False
    readable: bool = True

    @property
    def end(self) -> int:
        """One past the last register address this value occupies."""
        return self.address + self.type.count

    def decode(self, words: list[int], ct: Decimal, pt: Decimal) -> Decimal | int:
        raw = 0
        for word in words:  # high word first
            raw = raw << 16 | word
        if self.type.signed and raw >= 1 << (16 * self.type.count - 1):
            raw -= 1 << (16 * self.type.count)
        if self.scale is None:
            return raw
        return Decimal(raw) * self.scale * self.factor.multiplier(ct, pt)

    def encode(self, value: Decimal | int) -> list[int]:
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise ModbusMapError(f"{self.name}: expected a Decimal or int, got {value!r}")
        raw = Decimal(value) / self.scale if self.scale is not None else Decimal(value)
        if not raw.is_finite() or raw != raw.to_integral_value():
            raise ModbusMapError(f"{self.name}: {value} is not a whole multiple of {self.scale}")
        low, high = self.type.bounds
        if not low <= int(raw) <= high:
            raise ModbusMapError(f"{self.name}: {value} out of range for {self.type.value}")
        unsigned = int(raw) % (1 << (16 * self.type.count))
        return [unsigned >> 16, unsigned & 0xFFFF] if self.type.count == 2 else [unsigned]


def _register_from_document(entry: dict[str, Any]) -> Register:
    try:
        address_text = entry["address"]
        if not isinstance(address_text, str) or not re.fullmatch(
            r"0x[0-9A-Fa-f]{1,4}", address_text
        ):
            raise ModbusMapError(f"address {address_text!r} must be hex like 0x0020")
        scale = entry.get("scale")
        register = Register(
            name=str(entry["name"]),
            address=int(address_text, 16),
            type=RegisterType(entry["type"]),
            scale=None if scale is None else Decimal(str(scale)),
            unit=str(entry.get("unit", "")),
            meaning=str(entry.get("meaning", "")),
            factor=Factor(entry.get("factor")),
            writable=bool(entry.get("writable", False)),
            readable=bool(entry.get("readable", True)),
        )
    except (KeyError, ValueError, ArithmeticError, TypeError) as error:
        raise ModbusMapError(f"register entry {entry!r}: {error}") from None
    if register.scale is None and register.factor is not Factor.NONE:
        raise ModbusMapError(f"{register.name}: a transformer factor needs a scale")
    if register.end > 0x10000:
        raise ModbusMapError(f"{register.name}: runs past address FFFF")
    return register


def _check_layout(registers: tuple[Register, ...]) -> None:
    names = [register.name for register in registers]
    if len(set(names)) != len(names):
        raise ModbusMapError("register names must be unique")
    ordered = sorted(registers, key=lambda register: register.address)
    for before, after in itertools.pairwise(ordered):
        if after.address < before.end:
            raise ModbusMapError(f"{before.name} and {after.name} overlap")


@dataclass(frozen=True, slots=True)
class RegisterMap:
    name: str
    description: str
    registers: tuple[Register, ...]

    def register(self, name: str) -> Register:
        for register in self.registers:
            if register.name == name:
                return register
        raise ModbusMapError(f"map {self.name} has no register named {name!r}")

    def decode(
        self, start: int, registers: list[int], ct: Decimal, pt: Decimal
    ) -> dict[str, Decimal | int]:
        """Every readable mapped value lying wholly inside ``registers`` read from ``start``."""
        if any(isinstance(word, bool) or not 0 <= word <= 0xFFFF for word in registers):
            raise ModbusMapError("register values must be 0..65535")
        if ct <= 0 or pt <= 0:
            raise ModbusMapError(f"CT ({ct}) and PT ({pt}) ratios must be positive")
        end = start + len(registers)
        return {
            register.name: register.decode(
                registers[register.address - start : register.end - start], ct, pt
            )
            for register in self.registers
            if register.readable and start <= register.address and register.end <= end
        }

    def plan_reads(self, names: list[str]) -> list[tuple[int, int]]:
        """Fewest ``(start, count)`` reads covering ``names``."""
        wanted = [self.register(name) for name in names]
        unreadable = [register.name for register in wanted if not register.readable]
        if unreadable:
            raise ModbusMapError(f"write-only registers cannot be read: {unreadable}")
        readable = {
            address
            for register in self.registers
            if register.readable
            for address in range(register.address, register.end)
        }
        reads: list[list[int]] = []
        for register in sorted(wanted, key=lambda register: register.address):
            if reads and self._can_extend(reads[-1], register, readable):
                reads[-1][1] = max(reads[-1][1], register.end)
            else:
                reads.append([register.address, register.end])
        return [(first, last - first) for first, last in reads]

    @staticmethod
    def _can_extend(read: list[int], register: Register, readable: set[int]) -> bool:
        first, last = read
        if max(last, register.end) - first > MAX_READ_REGISTERS:
            return False
        return all(address in readable for address in range(last, register.address))

    def encode_write(self, name: str, value: Decimal | int) -> tuple[int, list[int]]:
        """Address and words for writing ``value`` (in the register's unit) to ``name``."""
        register = self.register(name)
        if not register.writable:
            raise ModbusMapError(f"{name} is not writable")
        return register.address, register.encode(value)

    def encode_recharge(self, amount: Decimal, purchase_count: int) -> tuple[int, list[int]]:
        """One write of amount (0.01 CNY) and purchase count, which the meter checks for replay."""
        return self._encode_counted(
            "recharge", RECHARGE_AMOUNT, RECHARGE_COUNT, amount, purchase_count
        )

    def encode_take_back(self, amount: Decimal, take_back_count: int) -> tuple[int, list[int]]:
        """One write of a take-back (退电): amount (0.01 CNY) and take-back count, which the
        meter checks for replay (and the amount against its remaining money). A map without
        the take-back block raises :class:`ModbusMapError`: the model cannot take money back."""
        return self._encode_counted(
            "take-back", TAKE_BACK_AMOUNT, TAKE_BACK_REQUEST_COUNT, amount, take_back_count
        )

    def _encode_counted(
        self, what: str, amount_name: str, count_name: str, amount: Decimal, count: int
    ) -> tuple[int, list[int]]:
        amount_register = self.register(amount_name)
        count_register = self.register(count_name)
        if amount_register.end != count_register.address:
            raise ModbusMapError(f"{what} amount and count must be adjacent")
        if isinstance(amount, bool) or not isinstance(amount, Decimal | int) or amount <= 0:
            raise ModbusMapError(f"a {what} amount must be a positive Decimal, got {amount!r}")
        words = amount_register.encode(amount) + count_register.encode(count)
        return amount_register.address, words


def parse_map(text: str) -> RegisterMap:
    """A map from its JSON text (what :func:`load_map` reads from the package)."""
    try:
        document = json.loads(text)
        entries = document["registers"]
        registers = tuple(_register_from_document(entry) for entry in entries)
        name, description = str(document["name"]), str(document.get("description", ""))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModbusMapError(f"bad register map: {error}") from None
    _check_layout(registers)
    return RegisterMap(name, description, registers)


def load_map(name: str) -> RegisterMap:
    """A map shipped in ``meterdesk/devices/maps`` by file stem, e.g. ``"reference_prepaid"``."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ModbusMapError(f"map name {name!r} must be lower-case letters, digits and _")
    resource = resources.files("meterdesk.devices").joinpath("maps", f"{name}.json")
    if not resource.is_file():
        raise ModbusMapError(f"no register map named {name!r}")
    return parse_map(resource.read_text(encoding="utf-8"))
