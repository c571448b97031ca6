"""The console's languages (F-I18N): zh-CN (the default) and English.

Messages are written in English in the templates and code (``_("Balance")``); the Chinese
catalog ``zh_CN/LC_MESSAGES/messages.po`` uses the words of docs/GLOSSARY.md. The ``.po`` file is
read and compiled in memory the first time a language is used, so a fresh ``pip install`` works
without a compile step (and a ``.mo`` file can never be stale). To add words: run
``pybabel extract -F src/meterdesk/web/i18n/babel.cfg -o /tmp/messages.pot src/meterdesk/web``,
then ``pybabel update -i /tmp/messages.pot -d src/meterdesk/web/i18n``, and translate the new
entries (tests/web/test_i18n.py fails while one is missing).

Money and dates are formatted with Babel's data for the locale: the CLDR patterns are parsed
once per locale (formatting a value then costs microseconds, which the room grid needs).
"""

from __future__ import annotations

import gettext
import io
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import DateTimePattern, get_date_format, get_datetime_format, get_time_format
from babel.dates import parse_pattern as parse_date_pattern
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"
LANGUAGE_NAMES = {"zh-CN": "中文", "en": "English"}
CURRENCY = "CNY"


def normalise(value: str | None) -> str | None:
    """A supported locale for ``value`` ("zh-CN", "zh_CN", "zh", "en-US" …), or None."""
    if not value:
        return None
    lowered = value.strip().replace("_", "-").lower()
    if lowered.startswith("zh"):
        return "zh-CN"
    if lowered.startswith("en"):
        return "en"
    return None


def babel_name(locale: str) -> str:
    return locale.replace("-", "_")


@cache
def translations(locale: str) -> gettext.NullTranslations:
    """The message catalog of ``locale`` (English: the messages themselves)."""
    folder = resources.files("meterdesk.web.i18n") / babel_name(locale) / "LC_MESSAGES"
    source = folder / "messages.po"
    if not source.is_file():
        return gettext.NullTranslations()
    with source.open("rb") as handle:
        catalog = read_po(handle, locale=babel_name(locale))
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(fp=compiled)


def catalog_messages(locale: str) -> dict[str, str]:
    """msgid → msgstr of the locale's .po file (for the completeness test)."""
    source = (
        resources.files("meterdesk.web.i18n") / babel_name(locale) / "LC_MESSAGES" / "messages.po"
    )
    with source.open("rb") as handle:
        catalog = read_po(handle, locale=babel_name(locale))
    return {str(m.id): str(m.string) for m in catalog if m.id and isinstance(m.id, str)}


@dataclass(frozen=True)
class Formatter:
    """Numbers, money and instants in one locale's formats."""

    locale: str
    currency_prefix: str
    group: str
    decimal: str
    datetime_pattern: DateTimePattern
    date_pattern: DateTimePattern
    time_pattern: DateTimePattern
    babel_locale: Locale

    def number(self, value: Decimal | int | float, places: int = 2) -> str:
        text = f"{value:,.{places}f}"
        if self.group == "," and self.decimal == ".":
            return text
        return text.replace(",", "\0").replace(".", self.decimal).replace("\0", self.group)

    def money(self, value: Decimal | int | None, *, fen: bool = False) -> str:
        """Two places with the locale's currency mark: ``¥1,234.50`` / ``CNY 1,234.50``."""
        if value is None:
            return "—"
        amount = Decimal(value).scaleb(-2) if fen else Decimal(value)
        sign = "-" if amount < 0 else ""
        return f"{sign}{self.currency_prefix}{self.number(abs(amount), 2)}"

    def datetime(self, value: datetime | None, tz: ZoneInfo, *, part: str = "datetime") -> str:
        if value is None:
            return "—"
        local = value.astimezone(tz)
        pattern = {"date": self.date_pattern, "time": self.time_pattern}.get(
            part, self.datetime_pattern
        )
        return str(pattern.apply(local, self.babel_locale))


def _pattern(value: Any) -> str:
    return str(getattr(value, "pattern", value))


@cache
def formatter(locale: str) -> Formatter:
    parsed = Locale.parse(babel_name(locale))
    date_text = _pattern(get_date_format("medium", locale=parsed))
    time_text = _pattern(get_time_format("short", locale=parsed))
    glue = str(get_datetime_format("medium", locale=parsed))
    prefix = "¥" if locale == "zh-CN" else f"{CURRENCY} "
    symbols = parsed.number_symbols.get("latn", {})
    return Formatter(
        locale=locale,
        currency_prefix=prefix,
        group=str(symbols.get("group", ",")),
        decimal=str(symbols.get("decimal", ".")),
        datetime_pattern=parse_date_pattern(
            glue.replace("{1}", date_text).replace("{0}", time_text)
        ),
        date_pattern=parse_date_pattern(date_text),
        time_pattern=parse_date_pattern(time_text),
        babel_locale=parsed,
    )
