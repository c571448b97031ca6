"""DL/T 645-2007 meters on a TCP socket, as behind a transparent DTU (``docs/PROTOCOLS.md`` §1).

:class:`Dlt645Bus` is the pure responder for the meters on one line: it decodes nothing itself
(the codec's :class:`~meterdesk.devices.codecs.dlt645.Dlt645Decoder` does) and answers

- 11 read: every identifier of the codec's table the meter has (energy incl. the ``0000FF00``
  block and previous settlements, U I P Q S PF F, date, time, address, status word 3, money,
  thresholds, prices); anything else → D1 "no such data";
- 13 read address to ``AA×6``: only when exactly one meter is on the line;
- 14 write (thresholds, prices, date, time) after the password check → 94 or D4;
- 1C relay / alarm / protect control with the password and deadline checks → 9C or DC
  (an expired deadline, on the meter's own clock, is refused);
- 08 broadcast time sync: every meter sets its clock, nobody replies;
- 16 freeze → 96 (accepted, nothing frozen beyond the monthly settlement); 12 follow-up → D2
  (the simulator never sends B1); 17 baud → D7; other codes with an error form → "other error".

An address no meter has gets silence, as on a real line; so does a wildcard that matches more
than one meter (on a real line the replies would collide). Replies carry four ``FE`` bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from meterdesk.devices.codecs.dlt645 import (
    BROADCAST_ADDRESS,
    DATA_ITEMS,
    Dlt645DataError,
    Dlt645Decoder,
    Dlt645Frame,
    ErrorStatus,
    Function,
    Password,
    decode_value,
    encode_frame,
    error_reply,
    normal_reply,
    parse_read_request,
    parse_relay_control_request,
    parse_time_sync_request,
    parse_write_request,
    read_address_reply,
    read_value_reply,
)
from meterdesk.shared.time import Clock
from meterdesk.simulator.dlt645_values import WRITABLE_DIS, read_value, write_value
from meterdesk.simulator.meter import ElectricityMeter
from meterdesk.simulator.prepaid import CommandRefused, RelayCommand
from meterdesk.simulator.tcp_bus import Answer, BusServer

WILDCARD_PAIR = "AA"
_ERROR_FORMS = {
    Function.SECURITY_AUTHENTICATION,
    Function.CHANGE_PASSWORD,
    Function.CLEAR_DEMAND,
    Function.CLEAR_METER,
    Function.CLEAR_EVENTS,
}


def dlt645_address(address: int) -> str:
    return f"{address:012d}"


def _matches(pattern: str, address: str) -> bool:
    pairs = zip(pattern[::2], pattern[1::2], address[::2], address[1::2], strict=True)
    return all(p1 + p2 == WILDCARD_PAIR or (p1, p2) == (a1, a2) for p1, p2, a1, a2 in pairs)


class Dlt645Bus:
    """The meters on one DL/T 645 line and how they answer a request."""

    def __init__(self, meters: Sequence[ElectricityMeter]) -> None:
        self.meters = {dlt645_address(meter.address): meter for meter in meters}

    def respond(self, frame: Dlt645Frame, now: datetime) -> Answer | None:
        if frame.is_reply:
            return None
        if frame.address == BROADCAST_ADDRESS:
            self._broadcast(frame, now)
            return None
        meter = self._addressed(frame.address)
        if meter is None:
            return None
        reply = self._dispatch(meter, frame, now)
        return None if reply is None else Answer(encode_frame(reply), meter.faults)

    def _addressed(self, address: str) -> ElectricityMeter | None:
        if WILDCARD_PAIR not in address:
            return self.meters.get(address)
        found = [meter for text, meter in self.meters.items() if _matches(address, text)]
        return found[0] if len(found) == 1 else None

    def _broadcast(self, frame: Dlt645Frame, now: datetime) -> None:
        if frame.function != Function.BROADCAST_TIME_SYNC:
            return
        for meter in self.meters.values():
            if meter.faults.offline:
                continue
            try:
                meter.clock.set(now, parse_time_sync_request(frame, meter.zone))
            except Dlt645DataError:
                return

    def _dispatch(
        self, meter: ElectricityMeter, frame: Dlt645Frame, now: datetime
    ) -> Dlt645Frame | None:
        address, function = dlt645_address(meter.address), frame.function
        if function == Function.READ:
            return _read(meter, frame, now)
        if function == Function.READ_ADDRESS:
            return read_address_reply(address)
        if function == Function.WRITE:
            return _write(meter, frame, now)
        if function == Function.RELAY_CONTROL:
            return _relay(meter, frame, now)
        if function == Function.FREEZE:
            return normal_reply(address, Function.FREEZE)
        if function == Function.READ_FOLLOW_UP:
            return error_reply(address, function, ErrorStatus.NO_SUCH_DATA)
        if function == Function.CHANGE_BAUD:
            return error_reply(address, function, ErrorStatus.BAUD_NOT_CHANGEABLE)
        if function in _ERROR_FORMS:
            return error_reply(address, function, ErrorStatus.OTHER)
        return None


def _read(meter: ElectricityMeter, frame: Dlt645Frame, now: datetime) -> Dlt645Frame:
    address = dlt645_address(meter.address)
    try:
        di, _extra = parse_read_request(frame)
        value = read_value(meter, di, now)
        if value is None:
            return error_reply(address, Function.READ, ErrorStatus.NO_SUCH_DATA)
        return read_value_reply(address, di, value)
    except Dlt645DataError:
        return error_reply(address, Function.READ, ErrorStatus.OTHER)


def _authorised(meter: ElectricityMeter, password: Password) -> bool:
    return meter.passwords.get(password.level) == password.code


def _write(meter: ElectricityMeter, frame: Dlt645Frame, now: datetime) -> Dlt645Frame:
    address = dlt645_address(meter.address)

    def refuse(status: ErrorStatus) -> Dlt645Frame:
        return error_reply(address, Function.WRITE, status)

    try:
        command = parse_write_request(frame)
    except Dlt645DataError:
        return refuse(ErrorStatus.OTHER)
    if not _authorised(meter, command.password):
        return refuse(ErrorStatus.UNAUTHORISED)
    if command.di not in DATA_ITEMS:
        return refuse(ErrorStatus.NO_SUCH_DATA)
    if command.di not in WRITABLE_DIS:
        return refuse(ErrorStatus.UNAUTHORISED)
    try:
        write_value(meter, command.di, decode_value(command.di, command.value), now)
    except (Dlt645DataError, CommandRefused):
        return refuse(ErrorStatus.OTHER)
    return normal_reply(address, Function.WRITE)


def _relay(meter: ElectricityMeter, frame: Dlt645Frame, now: datetime) -> Dlt645Frame:
    address = dlt645_address(meter.address)

    def refuse(status: ErrorStatus) -> Dlt645Frame:
        return error_reply(address, Function.RELAY_CONTROL, status)

    try:
        command = parse_relay_control_request(frame, meter.zone)
    except Dlt645DataError:
        return refuse(ErrorStatus.OTHER)
    if not _authorised(meter, command.password):
        return refuse(ErrorStatus.UNAUTHORISED)
    if command.deadline < meter.clock.read(now):
        return refuse(ErrorStatus.OTHER)
    try:
        meter.advance(now)
        meter.engine.command(RelayCommand(command.action))
    except CommandRefused:
        return refuse(ErrorStatus.OTHER)
    return normal_reply(address, Function.RELAY_CONTROL)


def dlt645_server(
    meters: Sequence[ElectricityMeter],
    *,
    host: str,
    port: int,
    clock: Clock,
    name: str = "dlt645",
    baud: int = 0,
    seed: int = 0,
) -> BusServer[Dlt645Frame]:
    """A server for ``meters`` on one line; ``await server.start()`` binds it."""
    bus = Dlt645Bus(meters)
    return BusServer(
        name=name,
        host=host,
        port=port,
        decoder=Dlt645Decoder,
        respond=bus.respond,
        clock=clock,
        baud=baud,
        seed=seed,
    )
