"""The services' input errors, translated for the console's forms (the ``form_error`` filter).

A form's bad input is refused by the same checks the API runs (shared/contacts.py for phones,
e-mail addresses and openids, sites/service.py, the API's request models through
``web/forms.py build``, FastAPI's form parsing, the opening wizard's own step checks), and their
errors are English: the API returns them as they are and clients may match on them. The console
shows them in the viewer's language instead, the way web/reasons.py shows stored reasons: a
table of the messages, exact or as anchored regular expressions, put into gettext messages.

A message is one of :data:`WHOLE` (a sentence of its own), or ``<field>: <problem>`` with a field
of :data:`FIELDS` (named by the form's own label) and a problem of :data:`PROBLEMS`, or several of
those joined by ``; `` (the request models and FastAPI report up to five at once). What the
operator typed is shown as given. An e-mail address's problem carries email-validator's own
reason: the usual ones are in :data:`EMAIL_REASONS`, any other is shown as the library wrote it.

The producers: shared/contacts.py (``normalise_phone``, ``normalise_email``,
``normalise_openid``), sites/service.py (``_name``, ``_optional``, ``parse_language``),
billing/quantity_model.py (``parse_credit_unit``, ``check_opening``), billing/accounts.py (what
opening an account refuses), the request models and form fields of web/routes/customers.py and
web/routes/wizard.py, and wizard.py's ``_check``; for the system notices' form
notifications/notice_model.py, notifications/notices.py and web/routes/notices.py.
tests/web/test_form_errors.py drives them and fails when one makes a message no shape knows.

Never guessed: a message that matches nothing (a new one, another form's) is shown exactly as
it is. In English the message itself is shown.
"""

from __future__ import annotations

import re

from meterdesk.web.i18n import translations
from meterdesk.web.reasons import ENGLISH, N_, Gettext, Shape, exact, first, shape, words

# A field as the form labels it: the customer page's names and the wizard's (``customer_…``).
FIELDS = {
    "name": N_("Name"),
    "customer_name": N_("Name"),
    "phone": N_("Phone"),
    "customer_phone": N_("Phone"),
    "email": N_("E-mail"),
    "customer_email": N_("E-mail"),
    "wechat_openid": N_("WeChat openid (official account)"),
    "customer_wechat_openid": N_("WeChat openid (official account)"),
    "wechat_mini_openid": N_("WeChat openid (mini program)"),
    "customer_wechat_mini_openid": N_("WeChat openid (mini program)"),
    "language": N_("Message language"),
    "customer_language": N_("Message language"),
    "credit_unit": N_("Credit"),
    "number": N_("Account number"),
    "room_id": N_("Room"),
    "customer_id": N_("Customer"),
    "billing_mode": N_("Billing"),
    "overdraft_limit": N_("Overdraft allowed"),
    "initial_credit": N_("Initial credit"),
    "payment_method": N_("Payment"),
    # a meter's opening reading, as the account model nests it (``meters.0.reading``): only
    # there, a reading on another form is not an opening one
    "meters.reading": N_("Opening reading"),
    # the system notices' form (notifications/notice_model.py, web/routes/notices.py)
    "scope": N_("Send to"),
    "site": N_("Site"),
    "building": N_("Building"),
    "floor": N_("Floor"),
    "rooms": N_("Rooms named"),
    "subject": N_("Notice subject"),
    "text": N_("Text"),
    "channels": N_("Channels"),
    "send at": N_("Send at"),
}

_GIVEN = r"(?P<given>'.*'|\".*\")"  # what was typed, as repr() shows it
_FIELD = "|".join(re.escape(key) for key in sorted(FIELDS, key=len, reverse=True))
_FIELDED = re.compile(rf"(?P<field>{_FIELD}|meters\.\d+\.reading): (?P<problem>.+)", re.DOTALL)
_INDEX = re.compile(r"\.\d+\.")  # meters.0.reading → meters.reading
_MINUTE = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"

# email-validator's reasons (the part in brackets): the usual ones; any other is shown as is.
EMAIL_REASONS: tuple[Shape, ...] = (
    exact("An email address must have an @-sign.", N_("An e-mail address must have an @-sign.")),
    exact(
        "There must be something before the @-sign.",
        N_("There must be something before the @-sign."),
    ),
    exact(
        "There must be something after the @-sign.",
        N_("There must be something after the @-sign."),
    ),
    exact(
        "The part after the @-sign is not valid. It should have a period.",
        N_("The part after the @-sign needs a period (example.com)."),
    ),
    exact(
        "The part after the @-sign is not valid. It is not within a valid top-level domain.",
        N_("The part after the @-sign does not end in a top-level domain in use."),
    ),
    exact(
        "The part after the @-sign is a special-use or reserved name that cannot be used with "
        "email.",
        N_("The part after the @-sign is a reserved name that cannot receive e-mail."),
    ),
    exact(
        "An email address cannot have two periods in a row.",
        N_("An e-mail address cannot have two periods in a row."),
    ),
    shape(
        r"An email address cannot (?:start with|end with|have) an? (?P<mark>period|hyphen)"
        r"(?: immediately (?:before|after) the @-sign)?\.",
        N_("A %(mark)s is not allowed there (at the start or end, or next to the @-sign)."),
        mark=words({"period": N_("period"), "hyphen": N_("hyphen")}),
    ),
    shape(
        r"The email address contains invalid characters before the @-sign: (?P<chars>.+)\.",
        N_("Characters not allowed before the @-sign: %(chars)s."),
    ),
    shape(
        r"The part after the @-sign contains invalid characters: (?P<chars>.+)\.",
        N_("Characters not allowed after the @-sign: %(chars)s."),
    ),
    shape(
        r"The email address has the \"full-width\" at-sign \(@\) character instead of a regular "
        r"at-sign\.",
        N_("The address has a full-width at-sign (＠) instead of @."),
    ),
)


def email_reason(value: str, gettext: Gettext) -> str:
    """email-validator's reason, translated when it is a usual one, else as the library wrote it."""
    return first(EMAIL_REASONS, value, gettext) or value


# What is wrong with a field's value (after ``<field>: ``).
PROBLEMS: tuple[Shape, ...] = (
    # FastAPI's form fields and the API's request models (pydantic's words)
    exact("Field required", N_("required")),
    exact("String should have at least 1 character", N_("must not be empty")),
    shape(
        r"String should have at most (?P<limit>\d+) characters?",
        N_("at most %(limit)s characters"),
    ),
    shape(
        r"Input should be (?P<first>'[^']*'(?:, '[^']*')*) or (?P<second>'[^']*')",
        N_("must be %(first)s or %(second)s"),
    ),
    exact(
        r"String should match pattern '^[0-9]{1,12}(\.[0-9]{1,2})?$'",
        N_("an amount in yuan, like 100 or 100.50 (at most two decimal places)"),
    ),
    exact(
        r"String should match pattern '^[0-9]{1,14}(\.[0-9]{1,4})?$'",
        N_("a reading, like 1000 or 1000.25 (at most four decimal places)"),
    ),
    exact(
        "Input should be a valid integer, unable to parse string as an integer",
        N_("must be a whole number"),
    ),
    shape(
        r"Value error, one line of text: no tab or line break \((?P<found>U\+[0-9A-F]{4})\)",
        N_("one line of text: no tab or line break (%(found)s)"),
    ),
    # sites/service.py
    exact("must not be empty", N_("must not be empty")),
    shape(r"at most (?P<limit>\d+) characters", N_("at most %(limit)s characters")),
    shape(
        rf"{_GIVEN} is not one of zh-CN, en",
        N_("%(given)s is not one of zh-CN, en"),
    ),
    # shared/contacts.py: phone numbers …
    shape(
        rf"{_GIVEN} is not a phone number \(digits, spaces and dashes, with \+ and the country "
        r"code for a number outside CN\)",
        N_(
            "%(given)s is not a phone number (digits, spaces and dashes; a number outside "
            "mainland China starts with + and the country code)"
        ),
    ),
    shape(rf"{_GIVEN} is not a phone number", N_("%(given)s is not a phone number")),
    shape(
        rf"{_GIVEN} is not a phone number \(no country code in use after \+\)",
        N_("%(given)s is not a phone number (no country code in use after +)"),
    ),
    shape(
        rf"{_GIVEN} is not a phone number \(too short\)",
        N_("%(given)s is not a phone number (too short)"),
    ),
    shape(
        rf"{_GIVEN} is not a phone number \(too long\)",
        N_("%(given)s is not a phone number (too long)"),
    ),
    shape(
        rf"{_GIVEN} is not a valid number for CN \((?P<digits>\d+) digits; mainland mobiles "
        r"have 11\)",
        N_("%(given)s is not a valid mainland China number (%(digits)s digits; mobiles have 11)"),
    ),
    shape(
        rf"{_GIVEN} is not a valid number for CN \((?P<digits>\d+) digits; no mainland mobile "
        r"network uses (?P<prefix>\d+)\)",
        N_(
            "%(given)s is not a valid mainland China number (%(digits)s digits; no mobile "
            "network uses %(prefix)s)"
        ),
    ),
    shape(
        rf"{_GIVEN} is not a valid number for CN \((?P<digits>\d+) digits; landlines: 0, the "
        r"area code and 7–8 digits; mobiles: 11 digits from 1\)",
        N_(
            "%(given)s is not a valid mainland China number (%(digits)s digits; landlines: 0, "
            "the area code and 7–8 digits; mobiles: 11 digits starting with 1)"
        ),
    ),
    shape(
        rf"{_GIVEN} is not a number in use in (?P<where>\S+) \((?P<digits>\d+) digits, none "
        r"begins like this\)",
        N_("%(given)s is not a number in use in %(where)s (%(digits)s digits, none begins so)"),
    ),
    shape(
        rf"{_GIVEN} is (?P<problem>too short|too long|of a length no number has|of no country "
        r"code in use) for (?P<where>\S+) \((?P<digits>\d+) digits\)",
        N_("%(given)s is %(problem)s for %(where)s (%(digits)s digits)"),
        problem=words(
            {
                "too short": N_("too short"),
                "too long": N_("too long"),
                "of a length no number has": N_("of a length no number has"),
                "of no country code in use": N_("of no country code in use"),
            }
        ),
    ),
    shape(
        rf"{_GIVEN} is too short for (?P<where>HK|MO) \((?P<digits>\d+) digits; "
        r"(?:Hong Kong|Macau) numbers have 8 digits\)",
        N_("%(given)s is too short for %(where)s (%(digits)s digits; numbers there have 8)"),
    ),
    shape(
        rf"{_GIVEN} is too long for (?P<where>HK|MO) \((?P<digits>\d+) digits; "
        r"(?:Hong Kong|Macau) numbers have 8 digits\)",
        N_("%(given)s is too long for %(where)s (%(digits)s digits; numbers there have 8)"),
    ),
    shape(
        rf"{_GIVEN} is not a valid number for (?P<where>\S+) \((?P<digits>\d+) digits\)",
        N_("%(given)s is not a valid number for %(where)s (%(digits)s digits)"),
    ),
    # … e-mail addresses and WeChat openids
    shape(
        rf"{_GIVEN} is not an e-mail address \((?P<why>.+)\)",
        N_("%(given)s is not an e-mail address (%(why)s)"),
        why=email_reason,
    ),
    shape(
        rf"{_GIVEN} is not a WeChat openid \(6 to 64 letters, digits, _ or -; WeChat's are 28, "
        r"like oAbC…\)",
        N_(
            "%(given)s is not a WeChat openid (6 to 64 letters, digits, _ or -; WeChat's are 28, "
            "like oAbC…)"
        ),
    ),
    # notifications/notice_model.py, notices.py and web/routes/notices.py: system notices
    exact("required", N_("required")),
    exact("choose one", N_("choose one")),
    shape(
        r"at most (?P<limit>\d+) characters \((?P<count>\d+) given\)",
        N_("at most %(limit)s characters (%(count)s given)"),
    ),
    shape(
        r"one line without control characters \((?P<found>U\+[0-9A-F]{4})\)",
        N_("one line without control characters (%(found)s)"),
    ),
    shape(
        r"a control character \((?P<found>U\+[0-9A-F]{4})\) is not allowed",
        N_("a control character (%(found)s) is not allowed"),
    ),
    exact(
        "give one or more room numbers, separated by commas",
        N_("give one or more room numbers, separated by commas"),
    ),
    shape(rf"no room {_GIVEN}", N_("no room %(given)s")),
    shape(
        rf"{_GIVEN} is on several floors: send to its floor",
        N_("%(given)s is on several floors: send to its floor"),
    ),
    exact("name at least one room", N_("name at least one room")),
    shape(
        r"at most (?P<limit>\d+) rooms in one notice", N_("at most %(limit)s rooms in one notice")
    ),
    shape(
        r"(?P<channel>\w+) is not a channel that reaches a person",
        N_("%(channel)s is not a channel that reaches a person"),
    ),
    shape(
        rf"{_GIVEN} is not a date and time like 2026-12-09 08:00",
        N_("%(given)s is not a date and time like 2026-12-09 08:00"),
    ),
    shape(
        rf"(?P<at>{_MINUTE}) UTC is not in the future \(now (?P<now>{_MINUTE}) UTC\)",
        N_("%(at)s UTC is not in the future (now %(now)s UTC)"),
    ),
    shape(
        rf"at most (?P<days>\d+) days ahead \((?P<at>{_MINUTE}) UTC given\)",
        N_("at most %(days)s days ahead (%(at)s UTC given)"),
    ),
    shape(
        r"these rooms are in sites of different time zones \((?P<zones>[^)]*)\): give the time "
        r"with its offset, like 2026-12-09T08:00\+08:00",
        N_(
            "these rooms are in sites of different time zones (%(zones)s): give the time with "
            "its offset, like 2026-12-09T08:00+08:00"
        ),
    ),
    # billing/quantity_model.py check_opening and parse_credit_unit
    exact(
        "quantity credit (购量) needs platform billing (后台计费); a meter billing its own money "
        "keeps no quantity",
        N_(
            "quantity credit (购量) needs platform billing (后台计费); a meter billing its own "
            "money keeps no quantity"
        ),
    ),
    shape(
        r"a quantity-credit account \(购量\) holds one meter, not (?P<count>\d+)",
        N_("a quantity-credit account (购量) holds one meter, not %(count)s"),
    ),
    exact(
        "a quantity-credit account (购量) has none; it is cut when what it bought is used up",
        N_("a quantity-credit account (购量) has none; it is cut when what it bought is used up"),
    ),
    shape(
        rf"{_GIVEN} is not 'money' or 'quantity' \(购量: kWh or m³ bought ahead\)",
        N_("%(given)s is not 'money' or 'quantity' (购量: kWh or m³ bought ahead)"),
    ),
)

UTILITIES = {"electricity": N_("electricity"), "water": N_("water")}

# Messages that are a sentence of their own.
WHOLE: tuple[Shape, ...] = (
    exact(
        "choose a room and a customer (or enter a new customer's name)",
        N_("Choose a room and a customer (or enter a new customer's name)"),
    ),
    exact(
        "enter the account number and give at least one meter a tariff",
        N_("Enter the account number and give at least one meter a tariff"),
    ),
    exact(
        "putting credit on an account needs the cashier or admin role",
        N_("Putting credit on an account needs the cashier or admin role"),
    ),
    shape(r"customer (?P<id>\d+) not found", N_("Customer %(id)s not found")),
    # billing/accounts.py, when the wizard opens the account
    shape(
        r"account (?P<number>'.*'|\".*\") already exists", N_("Account %(number)s already exists")
    ),
    shape(
        r"meter (?P<id>\d+) already belongs to an open account",
        N_("Meter %(id)s already belongs to an open account"),
    ),
    shape(
        r"(?P<what>room|meter|tariff|site|building|floor) (?P<id>\d+) not found",
        N_("%(what)s %(id)s not found"),
        what=words(
            {
                "room": N_("Room"),
                "meter": N_("Meter"),
                "tariff": N_("Tariff"),
                "site": N_("Site"),
                "building": N_("Building"),
                "floor": N_("Floor"),
            }
        ),
    ),
    # notifications/notices.py: a place whose rooms have no tenant
    shape(
        r"no open account in this (?P<kind>organisation|site|building|floor|rooms): nobody to "
        r"send the notice to",
        N_("No open account in this %(kind)s: nobody to send the notice to"),
        kind=words(
            {
                "organisation": N_("organisation"),
                "site": N_("site"),
                "building": N_("building"),
                "floor": N_("floor"),
                "rooms": N_("choice of rooms"),
            }
        ),
    ),
    shape(
        r"meter (?P<id>\d+) measures (?P<meter>electricity|water) but the tariff prices "
        r"(?P<tariff>electricity|water)",
        N_("Meter %(id)s measures %(meter)s but the tariff prices %(tariff)s"),
        meter=words(UTILITIES),
        tariff=words(UTILITIES),
    ),
)


def _one(message: str, gettext: Gettext) -> str | None:
    whole = first(WHOLE, message, gettext)
    if whole is not None:
        return whole
    fielded = _FIELDED.fullmatch(message)
    if fielded is None:
        return None
    problem = first(PROBLEMS, fielded["problem"], gettext)
    if problem is None:
        return None
    label = FIELDS[_INDEX.sub(".", fielded.group("field"))]
    return gettext(N_("%(field)s: %(problem)s")) % {"field": gettext(label), "problem": problem}


def _translate(message: str, gettext: Gettext) -> str | None:
    """``message`` translated, or None when any part of it is unknown."""
    single = _one(message, gettext)
    if single is not None:
        return single
    parts = [_one(part, gettext) for part in message.split("; ")]
    if len(parts) < 2 or any(part is None for part in parts):
        return None
    shown = [part for part in parts if part is not None]
    joined = shown[0]
    for later in shown[1:]:
        joined = gettext(N_("%(earlier)s; %(later)s")) % {"earlier": joined, "later": later}
    return joined


def known(message: str) -> bool:
    """Does the table know ``message`` (every part of a joined one)? An e-mail address's reason
    from email-validator may still be shown as the library wrote it: see :func:`email_known`."""
    return _translate(message, lambda text: text) is not None


def email_known(reason: str) -> bool:
    return first(EMAIL_REASONS, reason, lambda text: text) is not None


def translate(message: str | None, locale: str) -> str:
    """``message`` for a viewer in ``locale``: translated when the table knows all of it, else as
    it is; in English, as it is."""
    if not message:
        return ""
    if locale == ENGLISH:
        return message
    return _translate(message, translations(locale).gettext) or message
