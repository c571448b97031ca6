"""CJ/T 188-2004 driver for water meters over a byte transport (M-Bus adapter or DTU).

A read is one 901F request: cumulative volume (m³, the register billed), valve state and the
battery-low bit. The meter's own clock is not trusted for ``measured_at`` (cheap water meters
drift by minutes a month); the platform's receive time is used.

Valve control is A017 (55 open, 99 close). A valve takes seconds (≈ 8 s) to move, so the reply
confirms only that the meter took the command; the valve state is confirmed by a later read.

Meter options: ``di_order`` (``high_first`` default, or ``low_first``: the DI byte order on
the wire differs between models), ``meter_type`` (hex, default ``10`` cold water), ``zone``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal

from meterdesk.devices.codecs import cjt188 as codec
from meterdesk.devices.drivers import (
    DEFAULT_SLEEP,
    RetryPolicy,
    Sleep,
    UnsupportedCommandError,
    default_clock,
    meter_zone,
    with_retries,
)
from meterdesk.devices.ports import (
    DeviceError,
    DeviceRefusedError,
    MeterAddress,
    RelayAction,
    Snapshot,
    ValveAction,
)
from meterdesk.devices.transports import ByteTransport

VALVE_NAMES = {
    codec.ValveState.OPEN: "open",
    codec.ValveState.CLOSED: "closed",
    codec.ValveState.UNDEFINED: "abnormal",
    codec.ValveState.ABNORMAL: "abnormal",
}
VALVE_COMMANDS = {
    ValveAction.OPEN: codec.ValveCommand.OPEN,
    ValveAction.CLOSE: codec.ValveCommand.CLOSE,
}
NOT_A_WATER_COMMAND = "CJ/T 188 water meters have no relay, prices, limits or stored credit"


def _settings(meter: MeterAddress) -> tuple[codec.DiOrder, int]:
    try:
        order = codec.DiOrder(meter.options.get("di_order", codec.DiOrder.HIGH_FIRST.value))
        meter_type = int(meter.options.get("meter_type", "10"), 16)
    except ValueError as error:
        raise DeviceError(f"meter {meter.meter_id}: bad CJ/T 188 option: {error}") from None
    if not 0 <= meter_type <= 0xFF:
        raise DeviceError(f"meter {meter.meter_id}: meter_type must be one byte")
    return order, meter_type


class Cjt188Driver:
    """One M-Bus line of CJ/T 188 water meters."""

    def __init__(
        self,
        transport: ByteTransport,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], datetime] = default_clock,
        sleep: Sleep = DEFAULT_SLEEP,
    ) -> None:
        self.transport = transport
        self.retry = retry or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._seq = 0

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    async def _ask(self, request: codec.Cjt188Frame) -> codec.Cjt188Frame:
        raw = codec.encode_frame(request)

        def accept(frame: codec.Cjt188Frame) -> bool:
            return (
                frame.address == request.address
                and frame.is_reply
                and frame.function == request.function
            )

        async def once() -> codec.Cjt188Frame:
            return await self.transport.exchange(
                raw, codec.Cjt188Decoder(), accept=accept, timeout_s=self.retry.timeout_s
            )

        return await with_retries(self.retry, once, sleep=self._sleep)

    async def read(self, meter: MeterAddress) -> Snapshot:
        order, meter_type = _settings(meter)
        request = codec.read_meter_request(
            meter.address, seq=self._next_seq(), meter_type=meter_type, di_order=order
        )
        reply = await self._ask(request)
        measured_at = self._clock()
        try:
            reading = codec.parse_read_meter_reply(reply, zone=meter_zone(meter), di_order=order)
        except codec.Cjt188RefusedError as error:
            raise DeviceRefusedError(f"meter {meter.address} refused 901F read: {error}") from None
        except codec.Cjt188Error as error:
            raise DeviceError(f"meter {meter.address}: bad 901F reply: {error}") from None
        return Snapshot(
            meter_id=meter.meter_id,
            measured_at=measured_at,
            total=reading.volume_m3,
            valve=VALVE_NAMES[reading.status.valve],
            battery_low=reading.status.battery_low,
        )

    async def valve(self, meter: MeterAddress, action: ValveAction) -> None:
        order, meter_type = _settings(meter)
        request = codec.valve_control_request(
            meter.address,
            VALVE_COMMANDS[action],
            seq=self._next_seq(),
            meter_type=meter_type,
            di_order=order,
        )
        reply = await self._ask(request)
        try:
            codec.parse_valve_control_reply(reply, di_order=order)
        except codec.Cjt188RefusedError as error:
            raise DeviceRefusedError(
                f"meter {meter.address} refused valve {action.value}: {error}"
            ) from None
        except codec.Cjt188Error as error:
            raise DeviceError(f"meter {meter.address}: bad valve reply: {error}") from None

    async def relay(self, meter: MeterAddress, action: RelayAction, deadline: datetime) -> None:
        raise UnsupportedCommandError(NOT_A_WATER_COMMAND)

    async def write_prices(self, meter: MeterAddress, prices: Mapping[str, Decimal]) -> None:
        raise UnsupportedCommandError(NOT_A_WATER_COMMAND)

    async def write_limits(self, meter: MeterAddress, limits: Mapping[str, Decimal]) -> None:
        raise UnsupportedCommandError(NOT_A_WATER_COMMAND)

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None:
        raise UnsupportedCommandError(NOT_A_WATER_COMMAND)

    async def take_back(self, meter: MeterAddress, amount: Decimal, take_back_count: int) -> None:
        raise UnsupportedCommandError(NOT_A_WATER_COMMAND)

    async def take_back_count(self, meter: MeterAddress) -> int:
        raise UnsupportedCommandError(NOT_A_WATER_COMMAND)

    async def sync_clock(self, meter: MeterAddress, now: datetime) -> None:
        raise UnsupportedCommandError("the CJ/T 188 clock write (A015) is not implemented")
