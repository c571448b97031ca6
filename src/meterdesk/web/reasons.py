"""The back end's free-text reasons, translated for display (the ``reason`` filter).

A command's result (``commands.reason``: why it failed, is being retried or was cancelled), a
quarantined reading's reason and a notification's error are stored in English: the API returns
them as stored, and clients may match on them. The console shows them in the viewer's language
instead. :data:`SHAPES` is
the table of the reasons the back end makes — exact strings, or anchored regular expressions
whose named parts (numbers, meter addresses, states, register names, an earlier reason) are put
into a gettext message. A part is shown as stored unless the shape says how to translate it:
a word from a fixed table (``relay open`` → 继电器断开（拉闸）) or, for a reason that wraps
another (``deadline passed (last: …)``), the inner reason through this same table.

The producers: ``devices/commands`` (model.py ``refused``/``no_answer``/``deadline_passed``/
``disagrees``, readback.py ``check``/``plan_recharge``, executor.py, claiming.py, creation.py,
service.py ``cancel``), ``metering/model.py`` (``register_problem``, ``check_step``),
``billing/model.py`` (merging readings), ``billing/ingest.py``, ``devices/mqtt_rows.py``,
``devices/mqtt_store.py`` and ``devices/uplink.py`` (topics); a notification's error, where
meterdesk wrote it (``notifications/channels/base.py`` ``sms_number``: a landline).
tests/web/test_reasons.py drives them and fails when one makes a reason no shape knows.

Never guessed: a reason that matches no shape (a new one, one clipped at the column's length, a
device's own error text, a JSON schema complaint) is shown exactly as stored. In English the
stored text itself is shown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from meterdesk.web.i18n import translations

Gettext = Callable[[str], str]
Part = Callable[[str, Gettext], str]  # a matched part → what the message shows for it

ENGLISH = "en"


def N_(message: str) -> str:  # noqa: N802 - gettext's name for "extract this, translate later"
    """Marks a message for extraction; it is translated when a reason is shown."""
    return message


def words(table: Mapping[str, str]) -> Part:
    """A part from a fixed set (the shape's pattern admits only the table's keys)."""

    def show(value: str, gettext: Gettext) -> str:
        return gettext(table[value])

    return show


def inner(value: str, gettext: Gettext) -> str:
    """A reason inside a reason: translated by the same table, or shown as stored."""
    return _translate(value, gettext)


_DAYS = re.compile(r"(?P<days>\d+) days?, (?P<time>\d+:\d\d:\d\d(?:\.\d+)?)")


def elapsed(value: str, gettext: Gettext) -> str:
    """Python's ``str(timedelta)``: ``0:15:00``, ``1 day, 2:00:00``, ``3 days, 0:00:00``."""
    found = _DAYS.fullmatch(value)
    if found is None:
        return value
    return gettext(N_("%(days)s day(s), %(time)s")) % found.groupdict()


@dataclass(frozen=True)
class Shape:
    """One reason the back end makes: its pattern (matched whole) and the message shown."""

    pattern: re.Pattern[str]
    message: str
    parts: Mapping[str, Part] = field(default_factory=dict)

    def show(self, found: re.Match[str], gettext: Gettext) -> str:
        values = {
            name: self.parts[name](value, gettext) if name in self.parts else value
            for name, value in found.groupdict().items()
        }
        return gettext(self.message) % values


def shape(regex: str, message: str, **parts: Part) -> Shape:
    return Shape(re.compile(regex), message, parts)


def exact(text: str, message: str) -> Shape:
    return Shape(re.compile(re.escape(text)), message)


# --- words ------------------------------------------------------------------------------------

# What a command's read-back must show (devices/commands/model.py WANTED), in those words.
STATES = {
    "relay open": N_("relay open"),
    "relay closed": N_("relay closed"),
    "relay closed or close allowed": N_("relay closed or close allowed"),
    "protect on": N_("protect on"),
    "protect off": N_("protect off"),
    "valve open": N_("valve open"),
    "valve closed": N_("valve closed"),
}
# What the read-back showed instead: "<field> is <shown>, expected <value>" (readback.py).
RELAY = {"open": N_("relay open"), "closed": N_("relay closed")}
PROTECT = {"on": N_("protect on"), "off": N_("protect off")}
VALVE = {"open": N_("valve open"), "closed": N_("valve closed"), "abnormal": N_("valve abnormal")}
FIELDS = {"relay": N_("relay"), "protected": N_("protect mode"), "valve": N_("valve")}
# A register of a reading (metering/model.py BANDS, and the total).
REGISTERS = {
    "total": N_("total register"),
    "sharp": N_("sharp register"),
    "peak": N_("peak register"),
    "flat": N_("flat register"),
    "valley": N_("valley register"),
    "deep_valley": N_("deep-valley register"),
}
TOPIC_PARTS = {"product key": N_("product key"), "gateway sn": N_("gateway serial number")}


def _alternatives(table: Mapping[str, str]) -> str:
    return "|".join(re.escape(key) for key in sorted(table, key=len, reverse=True))


_STATE = _alternatives(STATES)
_REGISTER = _alternatives(REGISTERS)
_ADDR = r"(?P<addr>'.*'|\".*\")"  # a repr()
_NUMBER = r"\S+"

# --- the table ----------------------------------------------------------------------------------

SHAPES: tuple[Shape, ...] = (
    # A command's result (commands.reason): failures, retries, cancellations.
    shape(r"refused by meter: (?P<text>.+)", N_("Refused by the meter: %(text)s")),
    shape(r"no answer after (?P<count>\d+) attempts?", N_("No answer after %(count)s attempt(s)")),
    shape(r"no answer: no driver \((?P<error>.*)\)", N_("No answer: no driver (%(error)s)")),
    shape(r"no answer: (?P<error>.+)", N_("No answer: %(error)s")),
    exact("deadline passed", N_("Deadline passed")),
    shape(
        r"deadline passed \(last: (?P<last>.+)\)",
        N_("Deadline passed (last: %(last)s)"),
        last=inner,
    ),
    shape(
        r"read-back disagrees: (?P<detail>.+)", N_("Read-back disagrees: %(detail)s"), detail=inner
    ),
    shape(
        rf"read-back shows (?P<state>{_STATE})",
        N_("Read-back shows %(state)s"),
        state=words(STATES),
    ),
    exact("not yet written", N_("Not yet written")),
    exact("the meter did not answer the read-back", N_("The meter did not answer the read-back")),
    shape(
        r"the meter did not report its (?P<field>relay|protected|valve) state",
        N_("The meter did not report its %(field)s state"),
        field=words(FIELDS),
    ),
    shape(
        r"relay is (?P<shown>open|closed), expected (?P<wanted>open|closed)",
        N_("Meter shows %(shown)s, expected %(wanted)s"),
        shown=words(RELAY),
        wanted=words(RELAY),
    ),
    shape(
        r"protected is (?P<shown>on|off), expected (?P<wanted>on|off)",
        N_("Meter shows %(shown)s, expected %(wanted)s"),
        shown=words(PROTECT),
        wanted=words(PROTECT),
    ),
    shape(
        r"valve is (?P<shown>open|closed|abnormal), expected (?P<wanted>open|closed|abnormal)",
        N_("Meter shows %(shown)s, expected %(wanted)s"),
        shown=words(VALVE),
        wanted=words(VALVE),
    ),
    exact(
        "the meter did not report its purchase count",
        N_("The meter did not report its purchase count"),
    ),
    shape(
        r"purchase count is (?P<shown>\d+), expected (?P<wanted>\d+)",
        N_("Purchase count is %(shown)s, expected %(wanted)s"),
    ),
    shape(
        r"purchase count (?P<shown>\d+) is behind purchase (?P<wanted>\d+); "
        r"reconcile before pushing again",
        N_(
            "Purchase count %(shown)s is behind purchase %(wanted)s; reconcile before pushing again"
        ),
    ),
    shape(
        r"purchase count (?P<shown>\d+) is past purchase (?P<wanted>\d+); "
        r"reconcile before pushing again",
        N_("Purchase count %(shown)s is past purchase %(wanted)s; reconcile before pushing again"),
    ),
    shape(
        r"purchase count went back: the meter shows (?P<shown>\d+) after purchase "
        r"(?P<wanted>\d+) was confirmed on it; record a replacement if it was reset or "
        r"swapped, and reconcile before pushing again",
        N_(
            "Purchase count went back: the meter shows %(shown)s after purchase %(wanted)s was "
            "confirmed on it; record a replacement if it was reset or swapped, and reconcile "
            "before pushing again"
        ),
    ),
    exact(
        "the meter did not report its take-back count",
        N_("The meter did not report its take-back count"),
    ),
    exact(
        "the meter did not report its remaining money",
        N_("The meter did not report its remaining money"),
    ),
    shape(
        r"take-back count is (?P<shown>\d+), expected (?P<wanted>\d+)",
        N_("Take-back count is %(shown)s, expected %(wanted)s"),
    ),
    shape(
        r"take-back count (?P<shown>\d+) is behind take-back (?P<wanted>\d+); "
        r"reconcile before taking money back again",
        N_(
            "Take-back count %(shown)s is behind take-back %(wanted)s; reconcile before taking "
            "money back again"
        ),
    ),
    shape(
        r"take-back count (?P<shown>\d+) is past take-back (?P<wanted>\d+); "
        r"reconcile before taking money back again",
        N_(
            "Take-back count %(shown)s is past take-back %(wanted)s; reconcile before taking "
            "money back again"
        ),
    ),
    shape(
        r"take-back count went back: the meter shows (?P<shown>\d+) after take-back "
        r"(?P<wanted>\d+) was confirmed on it; record a replacement if it was reset or "
        r"swapped, and reconcile before taking money back",
        N_(
            "Take-back count went back: the meter shows %(shown)s after take-back %(wanted)s was "
            "confirmed on it; record a replacement if it was reset or swapped, and reconcile "
            "before taking money back"
        ),
    ),
    shape(
        r"recharge reversed by transfer (?P<id>\d+)",
        N_("Recharge reversed by transfer %(id)s"),
    ),
    exact(
        "account closed: its money is settled from the wallet",
        N_("Account closed: its money is settled from the wallet"),
    ),
    shape(r"superseded by #(?P<id>\d+)", N_("Superseded by #%(id)s")),
    shape(r"cancelled by (?P<actor>.+?): (?P<note>.*)", N_("Cancelled by %(actor)s: %(note)s")),
    shape(r"cancelled by (?P<actor>.+)", N_("Cancelled by %(actor)s")),
    # A quarantined reading's reason: its registers cannot be real …
    shape(
        rf"register (?P<name>{_REGISTER}) is not a number \((?P<value>.*)\)",
        N_("The %(name)s is not a number (%(value)s)"),
        name=words(REGISTERS),
    ),
    shape(
        rf"register (?P<name>{_REGISTER}) is negative \((?P<value>.*)\)",
        N_("The %(name)s is negative (%(value)s)"),
        name=words(REGISTERS),
    ),
    shape(
        rf"register (?P<name>{_REGISTER}) (?P<value>{_NUMBER}) is not below the meter's "
        rf"modulus (?P<modulus>{_NUMBER})",
        N_("The %(name)s %(value)s is not below the meter's modulus %(modulus)s"),
        name=words(REGISTERS),
    ),
    shape(
        rf"register (?P<name>{_REGISTER}) (?P<value>{_NUMBER}) has more than (?P<places>\d+) "
        r"decimal places",
        N_("The %(name)s %(value)s has more than %(places)s decimal places"),
        name=words(REGISTERS),
    ),
    shape(
        r"bands: unknown band\(s\) (?P<unknown>\[.*\]); use (?P<known>.+)",
        N_("Unknown band(s) %(unknown)s; use %(known)s"),
    ),
    # … it does not follow its neighbours …
    shape(
        rf"register went down from (?P<earlier>{_NUMBER}) to (?P<later>{_NUMBER}) and is not a "
        rf"rollover at (?P<modulus>{_NUMBER})",
        N_("Register went down from %(earlier)s to %(later)s and is not a rollover at %(modulus)s"),
    ),
    shape(
        rf"(?P<delta>{_NUMBER}) in (?P<elapsed>(?:\d+ days?, )?\d+:\d\d:\d\d(?:\.\d+)?) exceeds "
        rf"the meter's maximum of (?P<maximum>{_NUMBER}) per hour",
        N_("%(delta)s in %(elapsed)s exceeds the meter's maximum of %(maximum)s per hour"),
        elapsed=elapsed,
    ),
    shape(
        rf"band registers advanced (?P<bands>{_NUMBER}) but the total advanced (?P<total>{_NUMBER})",
        N_("Band registers advanced %(bands)s but the total advanced %(total)s"),
    ),
    shape(
        rf"a reading at the same time was already accepted with total (?P<total>{_NUMBER})",
        N_("A reading at the same time was already accepted with total %(total)s"),
    ),
    shape(
        r"does not fit before the accepted reading of (?P<at>\S+): (?P<reason>.+)",
        N_("Does not fit before the accepted reading of %(at)s: %(reason)s"),
        reason=inner,
    ),
    exact(
        "differs from a reading at the same time in the same batch",
        N_("Differs from a reading at the same time in the same batch"),
    ),
    # … or it cannot be billed.
    shape(
        r"measured while the meter belonged to account (?P<account>\d+), closed and settled since",
        N_("Measured while the meter belonged to account %(account)s, closed and settled since"),
    ),
    shape(r"no meter with id (?P<id>-?\d+)", N_("No meter with id %(id)s")),
    # MQTT uplink: the meter entry or the whole message was refused.
    shape(
        rf"no meter with address {_ADDR} in the gateway's organisation",
        N_("No meter with address %(addr)s in the gateway's organisation"),
    ),
    shape(
        rf"the meter with address {_ADDR} is on another gateway's bus",
        N_("The meter with address %(addr)s is on another gateway's bus"),
    ),
    shape(
        rf"(?P<count>\d+) meters have address {_ADDR}: give each meter a unique address",
        N_("%(count)s meters have address %(addr)s: give each meter a unique address"),
    ),
    shape(
        rf"energy registers reported for water meter {_ADDR}",
        N_("Energy registers reported for water meter %(addr)s"),
    ),
    shape(
        rf"a water volume reported for electricity meter {_ADDR}",
        N_("A water volume reported for electricity meter %(addr)s"),
    ),
    exact("band registers without energy_kwh", N_("Band registers without energy_kwh")),
    shape(
        rf"register (?P<value>{_NUMBER}) is outside 0 … (?P<maximum>{_NUMBER})",
        N_("Register %(value)s is outside 0 … %(maximum)s"),
    ),
    shape(
        rf"register (?P<value>{_NUMBER}) has more than (?P<places>\d+) decimal places",
        N_("Register %(value)s has more than %(places)s decimal places"),
    ),
    exact("refused", N_("Refused")),
    exact("not a report", N_("Not a report")),
    shape(
        r"sn (?P<sn>'.*'|\".*\") differs from the topic's gateway (?P<topic>'.*'|\".*\")",
        N_("Serial number %(sn)s differs from the topic's gateway %(topic)s"),
    ),
    shape(
        r"unknown gateway (?P<sn>'.*'|\".*\") \(product key (?P<key>'.*'|\".*\")\): register it",
        N_("Unknown gateway %(sn)s (product key %(key)s): register it"),
    ),
    shape(r"(?P<topic>'.*'|\".*\") is not an up topic", N_("%(topic)s is not an up topic")),
    shape(
        r"topic (?P<topic>'.*'|\".*\") is not data/up\|down/<product_key>/<sn>",
        N_("Topic %(topic)s is not data/up|down/<product_key>/<sn>"),
    ),
    shape(
        r"(?P<what>product key|gateway sn) (?P<value>'.*'|\".*\") cannot be an MQTT topic level",
        N_("%(what)s %(value)s cannot be an MQTT topic level"),
        what=words(TOPIC_PARTS),
    ),
    # A notification that failed before it reached the provider (its other failures are the
    # provider's own words, shown as stored).
    shape(
        r"(?P<channel>\w+): landline: SMS cannot reach (?P<number>\+[0-9 -]+); use voice or add "
        r"a mobile number",
        N_("%(channel)s: landline: SMS cannot reach %(number)s; use voice or add a mobile number"),
    ),
)


def first(table: Sequence[Shape], message: str, gettext: Gettext) -> str | None:
    """``message`` shown by the first shape of ``table`` it has, or None (web/form_errors.py
    reads its own tables with it)."""
    for known in table:
        found = known.pattern.fullmatch(message)
        if found is not None:
            return known.show(found, gettext)
    return None


def find(reason: str) -> Shape | None:
    """The shape that ``reason`` has, if the table knows it."""
    for known in SHAPES:
        if known.pattern.fullmatch(reason):
            return known
    return None


def known(reason: str) -> bool:
    """Does the table know ``reason``, and every reason inside it?"""
    for candidate in SHAPES:
        found = candidate.pattern.fullmatch(reason)
        if found is not None:
            return all(
                known(value)
                for name, value in found.groupdict().items()
                if candidate.parts.get(name) is inner
            )
    return False


def _translate(reason: str, gettext: Gettext) -> str:
    return first(SHAPES, reason, gettext) or reason


def translate(reason: str | None, locale: str) -> str:
    """``reason`` for a viewer in ``locale``: translated when its shape is known, else as
    stored; in English, as stored."""
    if not reason:
        return ""
    if locale == ENGLISH:
        return reason
    return _translate(reason, translations(locale).gettext)
