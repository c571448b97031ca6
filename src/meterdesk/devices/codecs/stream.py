"""Finding frames in a byte stream: the resynchronisation shared by every codec's decoder.

A codec supplies the start marker (``68`` for DL/T 645 and CJ/T 188, ``##`` for HJ212) and a
*judge* that looks at the candidate starting at one offset and says whether it is a complete
valid frame, a frame still waiting for bytes, or not a frame at all.

Invariants:
- :meth:`FrameScanner.feed` never raises on input; it returns frames in wire order.
- An invalid candidate costs one byte: the search restarts at the next marker, so a good
  frame hidden inside garbage or inside a frame with a bad checksum is still found.
- An incomplete candidate does not hold back a complete valid frame that already follows it
  (garbage like ``68 … 68 C FF`` promising 255 bytes would otherwise swallow the meter's reply
  on a half-duplex line until the next reply arrives). The price: if a genuine frame's data
  contains a complete valid frame, that inner frame wins while the outer one is still arriving.
- The buffer holds at most one candidate's worth of bytes plus what arrived with it.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Generic, TypeVar

FrameType = TypeVar("FrameType")


class Verdict(Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"
    INVALID = "invalid"


# (verdict, the frame when complete and valid, its end offset in the buffer)
Judge = Callable[[bytearray, int], tuple[Verdict, FrameType | None, int]]


class FrameScanner(Generic[FrameType]):
    """Feed it whatever the transport received; get back the frames found so far."""

    def __init__(self, marker: bytes, judge: Judge[FrameType], preamble_byte: int | None = None):
        self._marker = marker
        self._judge = judge
        self._preamble_byte = preamble_byte
        self._buffer = bytearray()
        self.discarded_byte_count = 0  # bytes thrown away (wake-up preambles not counted)

    @property
    def pending(self) -> bytes:
        """Bytes held back while waiting for the rest of a frame."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[FrameType]:
        self._buffer.extend(data)
        frames: list[FrameType] = []
        while (frame := self._next_frame()) is not None:
            frames.append(frame)
        return frames

    def _discard(self, count: int) -> None:
        skipped = self._buffer[:count]
        preamble = skipped.count(self._preamble_byte) if self._preamble_byte is not None else 0
        self.discarded_byte_count += count - preamble
        del self._buffer[:count]

    def _next_frame(self) -> FrameType | None:
        while True:
            start = self._buffer.find(self._marker)
            if start < 0:  # keep a possible first part of a multi-byte marker
                self._discard(max(len(self._buffer) - len(self._marker) + 1, 0))
                return None
            self._discard(start)
            verdict, frame, end = self._judge(self._buffer, 0)
            if frame is not None:
                del self._buffer[:end]
                return frame
            if verdict is Verdict.INCOMPLETE:
                return self._look_ahead()
            self._discard(1)

    def _look_ahead(self) -> FrameType | None:
        at = self._buffer.find(self._marker, 1)
        while at >= 0:
            _verdict, frame, end = self._judge(self._buffer, at)
            if frame is not None:
                self._discard(at)
                del self._buffer[: end - at]
                return frame
            at = self._buffer.find(self._marker, at + 1)
        return None
