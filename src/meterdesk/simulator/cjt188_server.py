"""CJ/T 188-2004 water meters on a TCP socket, as behind a transparent M-Bus DTU (§3).

:class:`Cjt188Bus` answers

- 01 read, DI 901F → 81 with cumulative volume (0.01 m³), settlement-day volume, the meter's
  clock and the status bytes (valve 00 open / 01 closed / 11 abnormal, battery low);
- 04 write, DI A017 with 55 (open) or 99 (close) → 84 with the status *at that moment*; the
  valve then takes the meter's ``valve_delay_s`` to move, and 901F shows the old position until
  the move has finished (the position switches change only at the end of travel);
- 03 read address (DI 810A) to the ``AA×7`` wildcard when exactly one meter is on the line;
- any other DI → C1 / C4 with the status bytes.

The two DI bytes are read and written in the order the *meter* uses (``WaterSpec.di_order``,
high byte first by default): a request in the other order is an unknown DI to it. A request
for another meter type (T byte) than the meter's, other than the ``AA`` wildcard, is ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from meterdesk.devices.codecs.cjt188 import (
    DI_READ_METER,
    DI_VALVE_CONTROL,
    Cjt188DataError,
    Cjt188Decoder,
    Cjt188Frame,
    Function,
    MeterReading,
    MeterStatus,
    ValveCommand,
    ValveState,
    di_to_wire,
    encode_frame,
    error_reply,
    parse_request_di,
    parse_valve_control_request,
    read_meter_reply,
    valve_control_reply,
)
from meterdesk.shared.time import Clock
from meterdesk.simulator.meter import ValvePosition, WaterMeter
from meterdesk.simulator.tcp_bus import Answer, BusServer

WILDCARD_PAIR = "AA"
WILDCARD_TYPE = 0xAA
DI_READ_ADDRESS = 0x810A
REPLY_BIT = 0x80
_VALVE_BITS = {
    ValvePosition.OPEN: ValveState.OPEN,
    ValvePosition.CLOSED: ValveState.CLOSED,
    ValvePosition.ABNORMAL: ValveState.ABNORMAL,
}


def cjt188_address(address: int) -> str:
    return f"{address:014d}"


def _matches(pattern: str, address: str) -> bool:
    pairs = zip(pattern[::2], pattern[1::2], address[::2], address[1::2], strict=True)
    return all(p1 + p2 == WILDCARD_PAIR or (p1, p2) == (a1, a2) for p1, p2, a1, a2 in pairs)


def meter_status(meter: WaterMeter, now: datetime) -> MeterStatus:
    return MeterStatus(_VALVE_BITS[meter.valve_position(now)], meter.battery_low)


class Cjt188Bus:
    """The water meters on one CJ/T 188 line and how they answer a request."""

    def __init__(self, meters: Sequence[WaterMeter]) -> None:
        self.meters = {cjt188_address(meter.address): meter for meter in meters}

    def respond(self, frame: Cjt188Frame, now: datetime) -> Answer | None:
        if frame.is_reply:
            return None
        meter = self._addressed(frame.address)
        if meter is None or frame.meter_type not in (meter.spec.meter_type, WILDCARD_TYPE):
            return None
        try:
            reply = self._dispatch(meter, frame, now)
        except Cjt188DataError:
            reply = error_reply(
                cjt188_address(meter.address),
                frame.function,
                meter_status(meter, now),
                seq=frame.data[2] if len(frame.data) > 2 else 0,
                meter_type=meter.spec.meter_type,
            )
        return None if reply is None else Answer(encode_frame(reply), meter.faults)

    def _addressed(self, address: str) -> WaterMeter | None:
        if WILDCARD_PAIR not in address:
            return self.meters.get(address)
        found = [meter for text, meter in self.meters.items() if _matches(address, text)]
        return found[0] if len(found) == 1 else None

    def _dispatch(self, meter: WaterMeter, frame: Cjt188Frame, now: datetime) -> Cjt188Frame | None:
        spec = meter.spec
        di, seq = parse_request_di(frame, di_order=spec.di_order)
        address = cjt188_address(meter.address)
        if frame.function == Function.READ and di == DI_READ_METER:
            status = meter_status(meter, now)  # advances the meter to now
            reading = MeterReading(
                meter.volume_m3, meter.settlement_volume_m3, meter.clock.read(now), status
            )
            return read_meter_reply(
                address,
                reading,
                zone=meter.zone,
                seq=seq,
                meter_type=spec.meter_type,
                di_order=spec.di_order,
            )
        if frame.function == Function.WRITE and di == DI_VALVE_CONTROL:
            command = parse_valve_control_request(frame, di_order=spec.di_order)
            meter.command_valve(command is ValveCommand.OPEN, now)
            status = meter_status(meter, now)
            return valve_control_reply(
                address, status, seq=seq, meter_type=spec.meter_type, di_order=spec.di_order
            )
        if frame.function == Function.READ_ADDRESS and di == DI_READ_ADDRESS:
            data = di_to_wire(DI_READ_ADDRESS, spec.di_order) + bytes([seq])
            return Cjt188Frame(spec.meter_type, address, Function.READ_ADDRESS | REPLY_BIT, data)
        raise Cjt188DataError(f"unsupported request: function {frame.function:02X}, DI {di:04X}")


def cjt188_server(
    meters: Sequence[WaterMeter],
    *,
    host: str,
    port: int,
    clock: Clock,
    name: str = "cjt188",
    baud: int = 0,
    seed: int = 0,
) -> BusServer[Cjt188Frame]:
    """A server for ``meters`` on one line; ``await server.start()`` binds it."""
    bus = Cjt188Bus(meters)
    return BusServer(
        name=name,
        host=host,
        port=port,
        decoder=Cjt188Decoder,
        respond=bus.respond,
        clock=clock,
        baud=baud,
        seed=seed,
    )
