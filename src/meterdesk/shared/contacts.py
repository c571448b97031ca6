"""Phone numbers, e-mail addresses and WeChat openids as they are stored: checked and normalised where they enter.

A number or address that is stored wrong fails at the SMS or mail provider days later — or
reaches somebody else — and the tenant is cut off without the warning meterdesk exists to give.
So every entry path (API, console, CLI, imports, channel settings) passes what it was given
through :func:`normalise_phone` / :func:`normalise_email` and stores only what comes out:

- a phone number becomes E.164 (``+8613800138000``): the one spelling the SMS providers, the
  search and the duplicate checks can all rely on. Whether a number is valid is Google's
  libphonenumber's call (``phonenumbers.is_valid_number``: the right length *and* a range a
  carrier or area code really uses), not ours. A number without ``+`` is read in
  :data:`DEFAULT_REGION`;
- an e-mail address becomes email-validator's normalised form (the domain lower-cased and
  IDNA-checked), syntax only: no DNS look-up (``check_deliverability=False``), since the
  machines that run meterdesk may have no route to the internet;
- a WeChat openid (the mini program's, which is not the official account's) is checked for its
  shape only (:data:`OPENID_PATTERN`): whether WeChat knows it is WeChat's call, at delivery.

Pure: no I/O, no clock, no settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from meterdesk.shared.errors import ValidationError

#: Where a number given without ``+`` and a country code is read. meterdesk's organisations and
#: sites carry a time zone but no country, so this is a constant: mainland China, where the
#: product is sold. A site abroad enters its tenants' numbers with ``+`` and the country code.
DEFAULT_REGION = "CN"

# What people type around the digits: spaces (also the ideographic one), dashes, dots, slashes,
# brackets, full-width digits and a leading plus. Letters are refused before phonenumbers sees
# the text, because it reads them as keypad digits (1-800-FLOWERS) or drops them.
_PHONE_CHARACTERS = re.compile(r"[+＋]?[0-9０-９\s\u3000\-‐–.()（）/]+")

# What a person is told about a number that is not valid in a region, after its digit count.
_EXPECTED_IN = {
    "HK": "Hong Kong numbers have 8 digits",
    "MO": "Macau numbers have 8 digits",
}

_UNPARSABLE = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: " (no country code in use after +)",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: " (too short)",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: " (too short)",
    phonenumbers.NumberParseException.TOO_LONG: " (too long)",
}

_LENGTH_PROBLEMS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "of a length no number has",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "of no country code in use",
}


def normalise_phone(
    text: str, default_region: str = DEFAULT_REGION, *, field: str = "phone"
) -> str:
    """``text`` as E.164 (``+8613800138000``), or a :class:`ValidationError` that names ``field``,
    repeats what was given and says what is wrong with it."""
    given = text.strip()
    if not given:
        raise ValidationError(f"{field}: must not be empty")
    if not _PHONE_CHARACTERS.fullmatch(given):
        raise ValidationError(
            f"{field}: {given!r} is not a phone number (digits, spaces and dashes, "
            f"with + and the country code for a number outside {default_region})"
        )
    try:
        number = phonenumbers.parse(given, default_region)
    except phonenumbers.NumberParseException as error:
        why = _UNPARSABLE.get(error.error_type, "")
        raise ValidationError(f"{field}: {given!r} is not a phone number{why}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(f"{field}: {given!r} {_why_invalid(number)}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _why_invalid(number: phonenumbers.PhoneNumber) -> str:
    region = phonenumbers.region_code_for_country_code(number.country_code or 0)
    national = phonenumbers.national_significant_number(number)
    where = f"+{number.country_code}" if region == phonenumbers.UNKNOWN_REGION else region
    if region == "CN":
        return f"is not a valid number for CN ({len(national)} digits; {_mainland_hint(national)})"
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason == phonenumbers.ValidationResult.IS_POSSIBLE:  # the length fits, the range does not
        return f"is not a number in use in {where} ({len(national)} digits, none begins like this)"
    problem = _LENGTH_PROBLEMS.get(reason)
    said = f"is {problem} for {where}" if problem else f"is not a valid number for {where}"
    expected = _EXPECTED_IN.get(region)
    return f"{said} ({len(national)} digits{'; ' + expected if expected else ''})"


def _mainland_hint(national: str) -> str:
    """Most mistakes in mainland numbers are a digit too many or too few in a mobile number."""
    mobile = "13" <= national[:2] <= "19"  # 10 is Beijing's area code
    if mobile and len(national) != 11:
        return "mainland mobiles have 11"
    if mobile:
        return f"no mainland mobile network uses {national[:3]}"
    return "landlines: 0, the area code and 7–8 digits; mobiles: 11 digits from 1"


def optional_phone(
    text: str | None, default_region: str = DEFAULT_REGION, *, field: str = "phone"
) -> str | None:
    """As :func:`normalise_phone`, where the field may be left out: ``None`` or blank is None."""
    if text is None or not text.strip():
        return None
    return normalise_phone(text, default_region, field=field)


#: What a WeChat openid may be. WeChat documents none; the ones it issues are 28 characters of
#: letters, digits, ``_`` and ``-`` (``oXyz…``), but other apps' ids (and test accounts) differ
#: in length, so any 6 to 64 of those characters pass: a pasted openid is never refused for its
#: length alone, while a phone number, a name, spaces or a whole URL pasted by mistake are.
OPENID_PATTERN = re.compile(r"[A-Za-z0-9_-]{6,64}")


def normalise_openid(text: str, *, field: str = "openid") -> str:
    """``text`` stripped, if it looks like a WeChat openid (:data:`OPENID_PATTERN`), or a
    :class:`ValidationError` naming ``field``: a wrong openid fails only at WeChat, days later."""
    given = text.strip()
    if not given:
        raise ValidationError(f"{field}: must not be empty")
    if not OPENID_PATTERN.fullmatch(given):
        raise ValidationError(
            f"{field}: {given[:70]!r} is not a WeChat openid (6 to 64 letters, digits, _ or -; "
            f"WeChat's are 28, like oAbC…)"
        )
    return given


def optional_openid(text: str | None, *, field: str = "openid") -> str | None:
    """As :func:`normalise_openid`, where the field may be left out: ``None`` or blank is None."""
    if text is None or not text.strip():
        return None
    return normalise_openid(text, field=field)


def normalise_email(text: str, *, field: str = "email") -> str:
    """``text`` in email-validator's normalised form, or a :class:`ValidationError` naming
    ``field`` with the library's reason. Syntax only (no DNS)."""
    given = text.strip()
    if not given:
        raise ValidationError(f"{field}: must not be empty")
    try:
        checked = validate_email(given, check_deliverability=False)
    except EmailNotValidError as error:
        raise ValidationError(f"{field}: {given!r} is not an e-mail address ({error})") from None
    return str(checked.normalized)


def optional_email(text: str | None, *, field: str = "email") -> str | None:
    """As :func:`normalise_email`, where the field may be left out: ``None`` or blank is None."""
    if text is None or not text.strip():
        return None
    return normalise_email(text, field=field)


@dataclass(frozen=True)
class E164:
    """A valid number split as providers want it: Aliyun takes mainland numbers without the
    country code, Tencent the whole E.164."""

    country_code: int
    national: str  # the national significant number: no trunk 0, no country code

    @classmethod
    def of(cls, stored: str, default_region: str = DEFAULT_REGION) -> E164:
        """A number as stored — E.164 since numbers are normalised on entry, anything before —
        or a :class:`ValidationError` saying why it cannot be sent to."""
        number = phonenumbers.parse(normalise_phone(stored, default_region, field="phone"))
        return cls(int(number.country_code or 0), phonenumbers.national_significant_number(number))

    def __str__(self) -> str:
        return f"+{self.country_code}{self.national}"


def is_landline(stored: str) -> bool:
    """Is ``stored`` (E.164) a number libphonenumber knows to be a fixed line? SMS cannot reach
    one: the providers refuse it, while a voice call gets through. Only ``FIXED_LINE`` counts:
    where fixed and mobile ranges cannot be told apart (``FIXED_LINE_OR_MOBILE``: the US,
    Canada…) the number may well be a mobile, so it is not called a landline. A number that
    cannot be read (stored before numbers were checked) is not one either: the adapters refuse
    it with their own reason."""
    try:
        number = phonenumbers.parse(stored, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.FIXED_LINE


def same_phone(stored: str | None, e164: str | None) -> bool:
    """Is ``stored`` — as it is in the database: E.164 since numbers are normalised on entry,
    typed any way before (``13800138000``, ``138-0013-8000``) — the number ``e164``? Both
    missing (None or blank) is the same too. A stored number that cannot be read is compared as
    it is, so it never equals a valid E.164 one."""
    if not stored or not stored.strip():
        return not e164
    if not e164:
        return False
    try:
        return normalise_phone(stored) == e164
    except ValidationError:
        return stored.strip() == e164


def readable(stored: str) -> str:
    """``+86 10 6552 9988`` for ``+861065529988``: how a person reads a stored number back."""
    number = phonenumbers.parse(stored, DEFAULT_REGION)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def sms_warning(stored: str | None, *, field: str = "phone") -> str | None:
    """What a person entering ``stored`` should know, though it is accepted: a landline gets
    voice calls but no SMS. None for a mobile, an unclear number or no number."""
    if not stored or not is_landline(stored):
        return None
    return (
        f"{field}: {readable(stored)} is a landline: it cannot receive SMS "
        f"(voice calls reach it); add a mobile number for SMS"
    )


def phone_search_digits(query: str) -> str | None:
    """The digits to look for among stored E.164 numbers when a search looks like a phone
    number ("138 0013 8000", "138-0013-8000"): separators would hide a stored number from a
    plain substring match. None for a query that is not phone-like (a name)."""
    given = query.strip()
    if not _PHONE_CHARACTERS.fullmatch(given):
        return None
    digits = "".join(str(int(ch)) for ch in given if ch.isdigit())
    if not given.startswith(("+", "＋")):
        digits = digits.removeprefix("00")  # 0086…: the international prefix, stored as +
    return digits or None


def phone_search_national(query: str) -> str | None:
    """The national significant number of a query that is a whole valid phone number
    ("+86 138 0013 8000" → ``13800138000``), to find it also among numbers stored before phones
    were normalised (``13800138000``, ``010…``): their digits lack the country code that the
    query's digits (:func:`phone_search_digits`) carry. None for anything else."""
    try:
        stored = normalise_phone(query)
    except ValidationError:
        return None
    return phonenumbers.national_significant_number(phonenumbers.parse(stored))
