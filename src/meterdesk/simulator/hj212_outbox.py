"""Store-and-forward of a virtual HJ212 gateway: which data packets to send, which to re-send (pure).

Each read of the meters becomes one data upload (``CN`` 2051 or 2061, ``Flag=5``: HJ212-2017
with the answer bit set), built with the codec and kept *pending* until the platform's data
answer (``CN=9014``) with the same ``QN`` and ``MN`` arrives.

- While connected, a pending packet is sent at once and re-sent, byte for byte, every
  ``resend_after_s`` until it is answered.
- While the connection is down, new packets simply wait: the pending list *is* the buffer.
  :meth:`Hj212Outbox.reconnected` makes every pending packet due at once, so the history goes
  out oldest first on the new connection. Unlike the MQTT outbox there is no separate history
  report: minute and hour data are the gateway's stored records already, and HJ212's answer
  names the packet only by ``QN``, so a packet keeps its ``QN`` (and its bytes) until answered.
- The pending list is bounded (the oldest packets are dropped, as a gateway's memory is
  finite) and :meth:`due` hands out at most a burst at a time.

Invariants: a ``QN`` is never given to two pending packets (``DataTime`` + a 3-digit counter;
reads are at distinct aligned times); nothing is dropped while pending unless the bound is hit;
``now_s`` is a monotonic reading used only for re-send timing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal

from meterdesk.devices.codecs.hj212 import Hj212Message, Pairs, encode_message
from meterdesk.devices.hj212.model import DATA_ANSWER_CN, DATA_CNS

DATA_ST = "22"  # the system code of docs/hj212.md's example; the platform does not read it
ANSWER_FLAG = "5"  # bit 0 "A": answer wanted; bit 2: protocol version HJ212-2017
DEFAULT_MAX_PENDING = 10_000  # packets kept while unanswered (each carries every meter)
DEFAULT_BURST = 100  # packets written per call of ``due``
PLACES = 4  # what the platform accepts (docs/hj212.md)


def register_text(value: Decimal) -> str:
    """A register as plain decimal text with at most :data:`PLACES` places (never exponent
    notation, which the platform refuses)."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PLACES:
        value = value.quantize(Decimal(1).scaleb(-PLACES))
    return format(value, "f")


def data_packet(*, qn: str, cn: str, password: str, mn: str, data_time: str, items: Pairs) -> bytes:
    """One data upload: ``DataTime`` in its own CP group, the meter items in the next one."""
    fields = (("QN", qn), ("ST", DATA_ST), ("CN", cn), ("PW", password), ("MN", mn))
    cp: tuple[Pairs, ...] = ((("DataTime", data_time),),)
    if items:
        cp += (items,)
    return encode_message(Hj212Message((*fields, ("Flag", ANSWER_FLAG)), cp))


@dataclass
class _Pending:
    data: bytes
    sent_at_s: float | None = None


class Hj212Outbox:
    def __init__(
        self,
        mn: str,
        password: str,
        *,
        cn: str = "2051",
        resend_after_s: float = 30.0,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if cn not in DATA_CNS:
            raise ValueError(f"CN {cn} is not a data upload ({', '.join(DATA_CNS)})")
        self.mn, self.password, self.cn = mn, password, cn
        self.resend_after_s, self.max_pending = resend_after_s, max_pending
        self._counter = 0
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self.answered_count = 0

    def add(self, data_time: str, items: Pairs) -> str:
        """A new packet for the read at ``data_time`` (local ``YYYYMMDDhhmmss``); its ``QN``."""
        qn = self._qn(data_time)
        data = data_packet(
            qn=qn, cn=self.cn, password=self.password, mn=self.mn, data_time=data_time, items=items
        )
        self._pending[qn] = _Pending(data)
        while len(self._pending) > self.max_pending:  # the gateway's memory is finite
            self._pending.popitem(last=False)
        return qn

    def _qn(self, data_time: str) -> str:
        while True:
            self._counter += 1
            qn = f"{data_time}{self._counter % 1000:03d}"
            if qn not in self._pending:
                return qn

    def answer(self, message: Hj212Message) -> bool:
        """A packet from the platform: a data answer for one of ours ends its pending."""
        if message.cn != DATA_ANSWER_CN or message.mn != self.mn or message.qn is None:
            return False
        if self._pending.pop(message.qn, None) is None:
            return False
        self.answered_count += 1
        return True

    def reconnected(self) -> None:
        """A new connection: everything still pending (the history) is due at once."""
        for pending in self._pending.values():
            pending.sent_at_s = None

    def due(self, now_s: float, limit: int = DEFAULT_BURST) -> list[bytes]:
        """Up to ``limit`` packets to write now (never sent, or unanswered for too long),
        oldest first."""
        due: list[bytes] = []
        for pending in self._pending.values():
            if len(due) >= limit:
                break
            if pending.sent_at_s is None or now_s - pending.sent_at_s >= self.resend_after_s:
                pending.sent_at_s = now_s
                due.append(pending.data)
        return due

    def is_pending(self, qn: str) -> bool:
        return qn in self._pending

    @property
    def pending_count(self) -> int:
        return len(self._pending)
