"""Faults on demand: what each fault kind does to a meter or gateway, and how it ends.

Comm faults (offline, slow, garbage) set the meter's :class:`~.meter.CommFaults` that the servers
honour; state faults act on the model (rollover jump, clock drift, replacement, stuck valve,
battery low); ``uplink_down`` cuts a gateway's connection (MQTT or HJ212) and ``garbage`` on an
HJ212 gateway (no meter address) writes junk bytes between its packets. ``revert`` ends a fault with a
duration; one-shot kinds (rollover, replace) have nothing to revert. Defaults when the config
gives no ``value``: slow 2 s, garbage 8 bytes, clock drift 500 ppm, rollover 1 kWh (or m³)
before the modulus.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from meterdesk.shared.errors import ValidationError
from meterdesk.simulator.config import FaultConfig, FaultKind
from meterdesk.simulator.gateway import VirtualGateway
from meterdesk.simulator.hj212_gateway import Hj212Gateway
from meterdesk.simulator.meter import ElectricityMeter, WaterMeter

Gateway = VirtualGateway | Hj212Gateway
Target = ElectricityMeter | WaterMeter | Gateway
_DEFAULTS = {
    FaultKind.SLOW: 2.0,
    FaultKind.GARBAGE: 8.0,
    FaultKind.CLOCK_DRIFT: 500.0,
    FaultKind.ROLLOVER: 1.0,
}


def _value(fault: FaultConfig) -> float:
    return fault.value if fault.value is not None else _DEFAULTS.get(fault.kind, 0.0)


def apply_fault(fault: FaultConfig, target: Target, now: datetime) -> None:
    if isinstance(target, VirtualGateway | Hj212Gateway):
        _gateway_fault(fault, target, on=True)
        return
    _switch(fault, target, now, on=True)


def revert_fault(fault: FaultConfig, target: Target, now: datetime) -> None:
    if isinstance(target, VirtualGateway | Hj212Gateway):
        _gateway_fault(fault, target, on=False)
        return
    _switch(fault, target, now, on=False)


def _gateway_fault(fault: FaultConfig, gateway: Gateway, *, on: bool) -> None:
    if fault.kind is FaultKind.UPLINK_DOWN:
        gateway.set_uplink(not on)
    elif fault.kind is FaultKind.GARBAGE and isinstance(gateway, Hj212Gateway):
        gateway.set_garbage(int(_value(fault)) if on else 0)  # bytes between its packets
    else:
        raise ValidationError(f"{fault.kind} is a meter fault, not a fault of this gateway")


def _switch(
    fault: FaultConfig, meter: ElectricityMeter | WaterMeter, now: datetime, *, on: bool
) -> None:
    kind, value = fault.kind, _value(fault)
    if kind in (FaultKind.VALVE_STUCK, FaultKind.BATTERY_LOW):
        _water_fault(kind, meter, on=on)
    elif kind is FaultKind.OFFLINE:
        meter.faults.offline = on
    elif kind is FaultKind.SLOW:
        meter.faults.reply_delay_s = value if on else 0.0
    elif kind is FaultKind.GARBAGE:
        meter.faults.garbage_bytes = int(value) if on else 0
    elif kind is FaultKind.CLOCK_DRIFT:
        meter.clock.start_drift(now, value if on else 0.0)
    elif kind is FaultKind.ROLLOVER and on:
        meter.jump_to_rollover(now, Decimal(str(value)))
    elif kind is FaultKind.REPLACE and on:
        meter.replace(now)
    elif kind is FaultKind.UPLINK_DOWN:
        raise ValidationError("uplink_down applies to a gateway")


def _water_fault(kind: FaultKind, meter: ElectricityMeter | WaterMeter, *, on: bool) -> None:
    if not isinstance(meter, WaterMeter):
        raise ValidationError(f"{kind} applies to water meters only")
    if kind is FaultKind.VALVE_STUCK:
        meter.valve.stuck = on
    else:
        meter.battery_low = on
