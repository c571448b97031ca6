"""Places and people.

Invariants: every site has an IANA time zone that its rooms inherit; names are non-empty and
unique among their siblings; a room's area, when given, is positive square metres; a customer's
messages are written in one of :class:`Language` (zh-CN unless the customer chose English).
"""

from __future__ import annotations

from enum import StrEnum


class RoomKind(StrEnum):
    APARTMENT = "apartment"
    SHOP = "shop"
    OFFICE = "office"
    PUBLIC = "public"
    DORMITORY = "dormitory"


class Language(StrEnum):
    """The languages a customer can receive messages in: those the notification templates
    exist for (``notifications/templates/<language>/``)."""

    ZH_CN = "zh-CN"
    EN = "en"


DEFAULT_LANGUAGE = Language.ZH_CN
