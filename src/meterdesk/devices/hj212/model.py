"""HJ212 data packets → meter readings: the pure mapping of the HJ212 uplink (``docs/hj212.md``).

The mapping is meterdesk's own use of HJ212's cumulative field ``Cou``:
- ``<meter address>-Cou=<total register>`` is the meter's total register (kWh or m³, as the
  meter's utility says);
- ``<meter address>.<band>-Cou=<band register>`` a band register (band names as in
  :data:`meterdesk.metering.model.BANDS`); bands without the total are refused.
- Every other item (``-Rtd``, ``-Flag``, ``-Avg`` …) is ignored: the platform keeps no live
  values from HJ212.

Invariants:
- ``DataTime`` (``YYYYMMDDhhmmss``) is the gateway's wall-clock time, read in the site's IANA
  zone; an ambiguous time (the hour repeated when DST ends) is taken as the first of the two.
  The result is an aware UTC instant.
- Values stay exact: plain decimal text, non-negative, below 10^12, at most :data:`PLACES`
  decimal places; anything else is refused with a reason, never rounded.
- Every refusal is a :class:`PacketRefused` whose ``reason`` is for people.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

from meterdesk.devices.codecs.hj212 import Hj212Message
from meterdesk.metering.model import BANDS, ReadingSource
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import local_to_utc

DATA_CNS = {"2011": "real-time", "2051": "minute", "2061": "hour", "2031": "day"}
DATA_ANSWER_CN = "9014"
ANSWER_ST = "91"  # the system code of an answer
CUMULATIVE = "Cou"
PLACES = 4  # the stored registers' scale (metering.tables.REGISTER_PLACES)
MAX_REGISTER = Decimal(10) ** 12
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
_DATA_TIME = re.compile(r"[0-9]{14}")


class PacketRefused(ValidationError):  # noqa: N818 - a refusal with a reason, like UplinkRejected
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class MeterValues:
    """One meter's registers at one time, as one packet carries them."""

    address: str
    measured_at: datetime
    total: Decimal
    bands: dict[str, Decimal] = field(default_factory=dict)


def wants_answer(message: Hj212Message) -> bool:
    """Flag bit 0 (``A``) set: the sender waits for an answer (HJ212-2017 §6.3.3)."""
    flag = message.flag
    return flag is not None and flag.isdigit() and int(flag) & 1 == 1


def data_answer(message: Hj212Message) -> Hj212Message:
    """The data answer (``ST=91;CN=9014``) to an upload: its QN, PW and MN, its Flag with the
    answer bit cleared (an answer asks for no answer, as in the standard's example), no CP."""
    flag = message.flag or "0"
    fields = [
        ("QN", message.qn or ""),
        ("ST", ANSWER_ST),
        ("CN", DATA_ANSWER_CN),
        ("PW", message.pw or ""),
        ("MN", message.mn or ""),
        ("Flag", str(int(flag) & ~1) if flag.isdigit() else flag),
    ]
    return Hj212Message(tuple((key, value) for key, value in fields if value or key == "Flag"))


def source_of(cn: str) -> ReadingSource:
    """Real-time data is a live read; minute/hour/day data are the gateway's stored records."""
    return ReadingSource.REALTIME if cn == "2011" else ReadingSource.HISTORY


def data_time(text: str | None, zone: ZoneInfo) -> datetime:
    if text is None:
        raise PacketRefused("CP has no DataTime")
    if not _DATA_TIME.fullmatch(text):
        raise PacketRefused(f"DataTime {text!r} is not YYYYMMDDhhmmss")
    y, mo, d, h, mi, se = (
        int(text[a:b]) for a, b in ((0, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14))
    )
    try:
        day, wall = date(y, mo, d), time(h, mi, se)
    except ValueError:
        raise PacketRefused(f"DataTime {text!r} is not a date and time") from None
    # As every local wall time here: a repeated hour is its first occurrence, a skipped one the
    # instant the clocks jumped (shared.time.local_to_utc).
    return local_to_utc(day, wall, zone)


def register(key: str, text: str) -> Decimal:
    if not _DECIMAL.fullmatch(text):
        raise PacketRefused(f"{key}: {text!r} is not a plain non-negative decimal")
    value = Decimal(text)
    if value >= MAX_REGISTER:
        raise PacketRefused(f"{key}: {text} is not below {MAX_REGISTER}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PLACES:
        raise PacketRefused(f"{key}: {text} has more than {PLACES} decimal places")
    return value


def _split(key: str) -> tuple[str, str | None] | None:
    """``addr-Cou`` → (addr, None); ``addr.band-Cou`` → (addr, band); other items → None."""
    code, dash, suffix = key.rpartition("-")
    if not dash or suffix != CUMULATIVE or not code:
        return None
    address, dot, band = code.rpartition(".")
    if not dot:
        return code, None
    if band not in BANDS:
        raise PacketRefused(f"{key}: unknown band {band!r}; use {', '.join(BANDS)}")
    if not address:
        raise PacketRefused(f"{key}: no meter address before the band")
    return address, band


def meter_values(message: Hj212Message, zone: ZoneInfo) -> list[MeterValues]:
    """The readings a data upload carries, one per meter address, in address order."""
    items = message.cp_values()
    at = data_time(items.get("DataTime"), zone)
    totals: dict[str, Decimal] = {}
    bands: dict[str, dict[str, Decimal]] = {}
    for key, text in items.items():
        found = _split(key)
        if found is None:
            continue
        address, band = found
        value = register(key, text)
        if band is None:
            totals[address] = value
        else:
            bands.setdefault(address, {})[band] = value
    orphans = sorted(set(bands) - set(totals))
    if orphans:
        raise PacketRefused(f"band registers without the total ({orphans[0]}-Cou)")
    return [MeterValues(a, at, totals[a], bands.get(a, {})) for a in sorted(totals)]
