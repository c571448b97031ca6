"""The MQTT-JSON uplink contract between gateways and the platform (``docs/PROTOCOLS.md`` §4).

Gateways publish reports on ``data/up/{product_key}/{gateway_sn}`` and the platform answers on
``data/down/{product_key}/{gateway_sn}`` with ``report_reply``; commands go down as ``control``
and come back up as ``control_reply``.

Invariants:
- Measured values are decimal *strings* (``"1234.56"``); a JSON number is refused, because a
  float has already lost the exact value the meter sent. They become ``Decimal`` and are
  written back as plain decimal strings.
- Times are integer milliseconds since the Unix epoch, which is UTC by definition; strings
  (ISO times with or without an offset), fractions, booleans and negative values are refused.
- The contract is meterdesk's own, so unknown fields are refused rather than silently dropped
  (a misspelt ``energy_kw`` must not turn into a missing reading).
- :func:`parse_report` raises only :class:`UplinkRejected`, whose ``reason`` says in words what
  was wrong; nothing from pydantic or ``json`` escapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer
from pydantic import ValidationError as PydanticValidationError

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.text import control_character

UP_PREFIX = "data/up"
DOWN_PREFIX = "data/down"
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_TOPIC_SEGMENT = re.compile(r"[^/+#\x00]+")


class UplinkRejected(ValidationError):  # noqa: N818 - the contract's name for a refused message
    """A gateway message that does not follow the contract; ``reason`` is for people."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _decimal_string(value: object) -> Decimal:
    if isinstance(value, Decimal) and value.is_finite():
        return value
    if not isinstance(value, str):
        raise ValueError(f'give a decimal string such as "12.34", not {type(value).__name__}')
    if not _DECIMAL_TEXT.fullmatch(value):
        raise ValueError(f"{value!r} is not a plain decimal string")
    return Decimal(value)


def _epoch_ms(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            "give integer milliseconds since the epoch (UTC), not a string or fraction"
        )
    if not 0 <= value <= MAX_EPOCH_MS:
        raise ValueError(f"{value} is not a time in milliseconds since the epoch (negative?)")
    return value


def _printable(value: str) -> str:
    # A NUL in a msgid, an address or a detail could not be stored on PostgreSQL: the whole
    # group commit failed (every gateway's messages in it), where one message should be refused.
    found = control_character(value)
    if found:
        raise ValueError(f"a control character ({found}) is not allowed")
    return value


def _result_code(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in (0, 1):
        raise ValueError(f"res must be the integer 0 or 1, got {value!r}")
    return value


DecimalString = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    PlainSerializer(lambda value: format(value, "f"), return_type=str),
]
EpochMilliseconds = Annotated[int, BeforeValidator(_epoch_ms)]
Text = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_printable)]
Result = Annotated[Literal[0, 1], BeforeValidator(_result_code)]
ControlCommand = Literal[
    "trip",
    "close_allowed",
    "close",
    "alarm_on",
    "alarm_off",
    "protect_on",
    "protect_off",
    "valve_open",
    "valve_close",
]


def to_datetime(epoch_ms: int) -> datetime:
    """Milliseconds since the epoch as an aware UTC instant."""
    # timedelta * int is exact and cheaper than timedelta(milliseconds=…), whose keyword parsing
    # and float-ready normalising ran for every meter entry (as db.types.int_instant)
    return EPOCH + _MILLISECOND * epoch_ms


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class MeterReport(_Contract):
    """One meter's values; electricity meters fill the energy fields, water meters volume."""

    addr: Text
    time: EpochMilliseconds
    state: Literal["ONLINE", "OFFLINE"]
    energy_kwh: DecimalString | None = None
    energy_sharp_kwh: DecimalString | None = None
    energy_peak_kwh: DecimalString | None = None
    energy_flat_kwh: DecimalString | None = None
    energy_valley_kwh: DecimalString | None = None
    voltage_v: DecimalString | None = None
    current_a: DecimalString | None = None
    power_kw: DecimalString | None = None
    pf: DecimalString | None = None
    frequency_hz: DecimalString | None = None
    remaining_money: DecimalString | None = None
    relay: Literal["open", "closed"] | None = None
    volume_m3: DecimalString | None = None
    valve: Literal["open", "closed", "abnormal"] | None = None

    @property
    def measured_at(self) -> datetime:
        return to_datetime(self.time)


class Reported(_Contract):
    source: Literal["REALTIME", "HISTORY"]
    meters: list[MeterReport] = Field(min_length=1)


class Report(_Contract):
    msgid: Text
    method: Literal["report"] = "report"
    sn: Text
    timestamp: EpochMilliseconds
    reported: Reported

    @property
    def sent_at(self) -> datetime:
        return to_datetime(self.timestamp)


class ReportReply(_Contract):
    msgid: Text
    method: Literal["report_reply"] = "report_reply"
    res: Result


class Control(_Contract):
    msgid: Text
    method: Literal["control"] = "control"
    addr: Text
    command: ControlCommand
    deadline: EpochMilliseconds


class ControlReply(_Contract):
    msgid: Text
    method: Literal["control_reply"] = "control_reply"
    addr: Text
    res: Result
    detail: Annotated[str, AfterValidator(_printable)] | None = None


Message = TypeVar("Message", Report, ReportReply, Control, ControlReply)


def _describe(error: PydanticValidationError) -> str:
    """The first problems of a pydantic error, as one sentence per problem."""
    parts: list[str] = []
    for problem in error.errors()[:3]:
        where = ".".join(str(part) for part in problem["loc"]) or "payload"
        kind = problem["type"]
        if kind == "json_invalid":
            parts.append(f"not valid JSON ({problem['ctx'].get('error', '')})")
        elif kind == "missing":
            parts.append(f"missing field {where}")
        elif kind == "extra_forbidden":
            parts.append(f"unknown field {where}")
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            parts.append(f"{where}: must be a JSON object")
        elif kind == "literal_error":
            parts.append(
                f"{where}: {problem['input']!r} is not one of {problem['ctx']['expected']}"
            )
        else:
            parts.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_message(model: type[Message], payload: bytes) -> Message:
    try:
        return model.model_validate_json(payload)
    except PydanticValidationError as error:
        raise UplinkRejected(_describe(error)) from None


def parse_report(payload: bytes) -> Report:
    return parse_message(Report, payload)


def parse_control(payload: bytes) -> Control:
    return parse_message(Control, payload)


def parse_control_reply(payload: bytes) -> ControlReply:
    return parse_message(ControlReply, payload)


def parse_report_reply(payload: bytes) -> ReportReply:
    return parse_message(ReportReply, payload)


def to_payload(message: Report | ReportReply | Control | ControlReply) -> bytes:
    """JSON bytes without absent optional fields; decimals as strings."""
    return message.model_dump_json(exclude_none=True).encode()


def reply_for(report: Report, ok: bool) -> ReportReply:
    """The acknowledgement; ``res`` 0 makes the gateway keep and resend the report."""
    return ReportReply(msgid=report.msgid, res=1 if ok else 0)


@dataclass(frozen=True, slots=True)
class Topic:
    direction: Literal["up", "down"]
    product_key: str
    sn: str


def _segment(value: str, what: str) -> str:
    if not _TOPIC_SEGMENT.fullmatch(value):
        raise UplinkRejected(f"{what} {value!r} cannot be an MQTT topic level")
    return value


def up_topic(product_key: str, sn: str) -> str:
    return f"{UP_PREFIX}/{_segment(product_key, 'product key')}/{_segment(sn, 'gateway sn')}"


def down_topic(product_key: str, sn: str) -> str:
    return f"{DOWN_PREFIX}/{_segment(product_key, 'product key')}/{_segment(sn, 'gateway sn')}"


def parse_topic(topic: str) -> Topic:
    """``data/up/PK/SN`` or ``data/down/PK/SN`` into its parts."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "data" or parts[1] not in ("up", "down"):
        raise UplinkRejected(f"topic {topic!r} is not data/up|down/<product_key>/<sn>")
    direction: Literal["up", "down"] = "up" if parts[1] == "up" else "down"
    return Topic(direction, _segment(parts[2], "product key"), _segment(parts[3], "gateway sn"))
