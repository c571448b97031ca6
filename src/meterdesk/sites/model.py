"""Places and people.

Invariants: every site has an IANA time zone that its rooms inherit; names are non-empty and
unique among their siblings; a room's area, when given, is positive square metres.
"""

from __future__ import annotations

from enum import StrEnum


class RoomKind(StrEnum):
    APARTMENT = "apartment"
    SHOP = "shop"
    OFFICE = "office"
    PUBLIC = "public"
    DORMITORY = "dormitory"
