"""A tariff being edited in the console: the JSON text parsed with ``tariffs.definition`` (whose
messages name the field, e.g. ``versions[0].seasons[0].workday[3]: …``), one day's bands for
the preview strip, and the what-if over a meter's last 30 days."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import local_midnight
from meterdesk.tariffs.definition import tariff_from_dict
from meterdesk.tariffs.model import Tariff
from meterdesk.tariffs.pricing import band_segments

WHAT_IF_DAYS = 30
FLAT_EXAMPLE: dict[str, Any] = {
    "utility": "electricity",
    "versions": [{"effective_from": "2026-01-01", "prices": {"flat": "0.6000"}}],
}


def parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValidationError(
            f"JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    except RecursionError:  # "[[[[…" thousands deep: the parser's stack, a 500 before
        raise ValidationError("JSON: nested too deeply") from None


def draft_tariff(text: str, *, utility: str | None) -> tuple[Tariff, dict[str, Any]]:
    """The draft as a tariff: a full definition, or (``utility`` given: a new version of a
    tariff of that utility) one version. Also the parsed JSON, to send on as it was."""
    parsed = parse_json(text)
    if utility is None:
        return tariff_from_dict(parsed), parsed
    if not isinstance(parsed, dict):
        raise ValidationError("version: give one version as a JSON object")
    return tariff_from_dict({"utility": utility, "versions": [parsed]}), parsed


@dataclass(frozen=True)
class BandPiece:
    band: str
    start: datetime
    end: datetime
    price: Decimal | None
    percent: float


def day_bands(tariff: Tariff, day: date, tz: ZoneInfo) -> list[BandPiece]:
    """The local day's bands under the tariff's newest version (as if in force that day)."""
    from meterdesk.reports.whatif import as_if_always

    start, end = local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)
    length = (end - start).total_seconds()
    pieces: list[BandPiece] = []
    for segment in band_segments(start, end, as_if_always(tariff), tz):
        if pieces and pieces[-1].band == segment.band.value:
            last = pieces.pop()
            segment_start = last.start
        else:
            segment_start = segment.start
        price = segment.version.prices.get(segment.band)
        share = (segment.end - segment_start).total_seconds() / length * 100
        pieces.append(BandPiece(segment.band.value, segment_start, segment.end, price, share))
    return pieces


def what_if_window(now: datetime) -> tuple[datetime, datetime]:
    return now - timedelta(days=WHAT_IF_DAYS), now


_SCALAR_LIST = re.compile(r"\[\s+([^\[\]{}]*?)\s+\]")


def pretty(value: Any) -> str:
    """Indented JSON with each list of plain values on one line (``["08:00", "peak"]``)."""
    text = json.dumps(value, ensure_ascii=False, indent=2)
    return _SCALAR_LIST.sub(lambda found: "[" + " ".join(found.group(1).split()) + "]", text)
