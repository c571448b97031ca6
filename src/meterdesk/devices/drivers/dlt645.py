"""DL/T 645-2007 driver over a byte transport (transparent DTU or local RS485).

A read asks for the energy register (the ``0000FF00`` block of total + tariffs 1–4 when the
meter keeps band registers), then voltage, current, power, power factor and frequency, status
word 3 (relay, protect) and the remaining money. Only the energy register is required: an item
the meter does not know ("no such data") comes back as ``None``.

Meter options (``meters.device_options``): ``zone`` (the site's IANA zone, for deadlines and
time sync; default Asia/Shanghai), ``has_band_registers``, ``live`` (``0`` skips the
instantaneous values), ``password`` (6 hex digits), ``password_level`` (0–9, default 2) and
``operator_code`` (8 hex digits) for writes and relay control.

Why no read-back after a relay command: the meter's 9C answer is its confirmation, and the
command executor confirms the switch by the next read's status word 3 anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal

from meterdesk.devices.codecs import dlt645 as codec
from meterdesk.devices.drivers import (
    DEFAULT_SLEEP,
    RetryPolicy,
    Sleep,
    UnsupportedCommandError,
    band_index,
    check_names,
    default_clock,
    flag,
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

DI_TOTAL = 0x00000000
DI_BLOCK = 0x0000FF00
DI_STATUS_WORD_3 = 0x04000503
DI_REMAINING_MONEY = 0x00900200
LIVE_ITEMS = {
    "voltage_v": 0x02010100,
    "current_a": 0x02020100,
    "power_kw": 0x02030000,
    "power_factor": 0x02060000,
    "frequency_hz": 0x02800002,
}
LIMIT_ITEMS = {
    "alarm_1": 0x04001001,
    "alarm_2": 0x04001002,
    "overdraft_limit": 0x04001003,
    "hoarding_limit": 0x04001004,
    "close_allowed": 0x04001005,
}
PRICE_DI_BASE = 0x04050100
RELAY_CODES = {
    RelayAction.TRIP: codec.RelayAction.TRIP,
    RelayAction.CLOSE_ALLOWED: codec.RelayAction.CLOSE_ALLOWED,
    RelayAction.CLOSE: codec.RelayAction.CLOSE_DIRECT,
    RelayAction.PROTECT_ON: codec.RelayAction.PROTECT_ON,
    RelayAction.PROTECT_OFF: codec.RelayAction.PROTECT_OFF,
    RelayAction.ALARM_ON: codec.RelayAction.ALARM_ON,
    RelayAction.ALARM_OFF: codec.RelayAction.ALARM_OFF,
}


def _refusal(meter: MeterAddress, what: str, status: codec.ErrorStatus) -> DeviceRefusedError:
    names = "|".join(flag.name or "?" for flag in status) or f"{int(status):#04x}"
    return DeviceRefusedError(f"meter {meter.address} refused {what}: {names}")


def _decimal(value: codec.DataValue | None) -> Decimal | None:
    return value if isinstance(value, Decimal) else None


class Dlt645Driver:
    """One bus of DL/T 645 meters."""

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

    async def _ask(self, request: codec.Dlt645Frame, di: int | None = None) -> codec.Dlt645Frame:
        """Send ``request``; the answer is the reply (or error reply) of the same meter and
        function, and for reads of the same DI (a late answer to another DI is skipped)."""
        raw = codec.encode_frame(request)

        def accept(frame: codec.Dlt645Frame) -> bool:
            if frame.address != request.address or not frame.is_reply:
                return False
            if frame.function != request.function:
                return False
            return di is None or frame.is_error or frame.data[:4] == codec.di_to_wire(di)

        async def once() -> codec.Dlt645Frame:
            return await self.transport.exchange(
                raw, codec.Dlt645Decoder(), accept=accept, timeout_s=self.retry.timeout_s
            )

        return await with_retries(self.retry, once, sleep=self._sleep)

    async def _read(
        self, meter: MeterAddress, di: int, *, optional: bool = False
    ) -> codec.DataValue | None:
        reply = await self._ask(codec.read_request(meter.address, di), di)
        try:
            return codec.parse_read_reply(reply).value()
        except codec.MeterRefusedError as error:
            if optional and codec.ErrorStatus.NO_SUCH_DATA in error.status:
                return None
            raise _refusal(meter, f"read {di:08X}", error.status) from None
        except codec.Dlt645Error as error:
            raise DeviceError(f"meter {meter.address}: bad answer to {di:08X}: {error}") from None

    async def _energy(
        self, meter: MeterAddress
    ) -> tuple[Decimal | None, dict[str, Decimal] | None]:
        if not flag(meter, "has_band_registers"):
            return _decimal(await self._read(meter, DI_TOTAL)), None
        block = await self._read(meter, DI_BLOCK)
        if not isinstance(block, tuple) or len(block) != 5:
            raise DeviceError(f"meter {meter.address}: energy block is not total + 4 tariffs")
        total, *tariffs = block
        return total, dict(zip(("sharp", "peak", "flat", "valley"), tariffs, strict=True))

    async def _live(self, meter: MeterAddress) -> dict[str, Decimal | None]:
        if not flag(meter, "live", default=True):
            return {}
        return {
            name: _decimal(await self._read(meter, di, optional=True))
            for name, di in LIVE_ITEMS.items()
        }

    async def read(self, meter: MeterAddress) -> Snapshot:
        total, bands = await self._energy(meter)
        measured_at = self._clock()
        live = await self._live(meter)
        status = await self._read(meter, DI_STATUS_WORD_3, optional=True)
        money = _decimal(await self._read(meter, DI_REMAINING_MONEY, optional=True))
        word = status if isinstance(status, codec.StatusWord3) else None
        return Snapshot(
            meter_id=meter.meter_id,
            measured_at=measured_at,
            total=total,
            bands=bands,
            voltage_v=live.get("voltage_v"),
            current_a=live.get("current_a"),
            power_kw=live.get("power_kw"),
            power_factor=live.get("power_factor"),
            frequency_hz=live.get("frequency_hz"),
            relay=None if word is None else ("open" if word.relay_open else "closed"),
            protected=None if word is None else word.protected,
            remaining_money=money,
        )

    def _authorisation(self, meter: MeterAddress) -> tuple[codec.Password, str]:
        try:
            level = int(meter.options.get("password_level", "2"))
            password = codec.Password(level, meter.options.get("password", "000000"))
        except (ValueError, codec.Dlt645Error) as error:
            raise DeviceError(f"meter {meter.meter_id}: bad password option: {error}") from None
        return password, meter.options.get("operator_code", codec.DEFAULT_OPERATOR_CODE)

    async def _command(self, meter: MeterAddress, request: codec.Dlt645Frame, what: str) -> None:
        reply = await self._ask(request)
        if reply.is_error:
            try:
                status = codec.error_status(reply)
            except codec.Dlt645Error:
                status = codec.ErrorStatus.OTHER
            raise _refusal(meter, what, status)

    async def relay(self, meter: MeterAddress, action: RelayAction, deadline: datetime) -> None:
        password, operator = self._authorisation(meter)
        try:
            request = codec.relay_control_request(
                meter.address,
                RELAY_CODES[action],
                deadline=deadline,
                zone=meter_zone(meter),
                password=password,
                operator_code=operator,
            )
        except codec.Dlt645Error as error:
            raise DeviceError(
                f"meter {meter.address}: cannot build relay command: {error}"
            ) from None
        await self._command(meter, request, f"relay {action.value}")

    async def _write(self, meter: MeterAddress, di: int, value: Decimal, what: str) -> None:
        password, operator = self._authorisation(meter)
        try:
            request = codec.write_value_request(
                meter.address, di, value, password=password, operator_code=operator
            )
        except codec.Dlt645Error as error:
            raise DeviceError(f"meter {meter.address}: cannot write {what}: {error}") from None
        await self._command(meter, request, f"write {what}")

    async def write_prices(self, meter: MeterAddress, prices: Mapping[str, Decimal]) -> None:
        items = {name: PRICE_DI_BASE + band_index(name) for name in prices}
        for name, di in items.items():
            await self._write(meter, di, prices[name], f"price {name}")

    async def write_limits(self, meter: MeterAddress, limits: Mapping[str, Decimal]) -> None:
        check_names(limits, LIMIT_ITEMS, "limit")
        for name, value in limits.items():
            await self._write(meter, LIMIT_ITEMS[name], value, name)

    async def sync_clock(self, meter: MeterAddress, now: datetime) -> None:
        """08 is a broadcast: every meter on the bus sets its clock and nobody answers, so one
        call per bus is enough (``meter`` only supplies the zone)."""
        try:
            frame = codec.time_sync_request(now, meter_zone(meter))
        except codec.Dlt645Error as error:
            raise DeviceError(f"cannot build time sync: {error}") from None
        await self.transport.send(codec.encode_frame(frame))

    async def valve(self, meter: MeterAddress, action: ValveAction) -> None:
        raise UnsupportedCommandError("DL/T 645 electricity meters have no valve")

    async def recharge(self, meter: MeterAddress, amount: Decimal, purchase_count: int) -> None:
        raise UnsupportedCommandError(
            "DL/T 645 recharge needs the State Grid security chip (03 authentication); "
            "bill on the platform and control the relay instead"
        )

    async def take_back(self, meter: MeterAddress, amount: Decimal, take_back_count: int) -> None:
        raise UnsupportedCommandError(
            "DL/T 645 take-back (退电) needs the State Grid security chip (03 authentication); "
            "bill on the platform and control the relay instead"
        )

    async def take_back_count(self, meter: MeterAddress) -> int:
        raise UnsupportedCommandError("DL/T 645 meters here keep no take-back counter")
