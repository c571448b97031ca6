"""Phones become E.164 and e-mails email-validator's normal form; anything else is a clear error
naming the field, what was given and what is wrong (shared/contacts.py)."""

from __future__ import annotations

import pytest

from meterdesk.shared.contacts import (
    E164,
    is_landline,
    normalise_email,
    normalise_openid,
    normalise_phone,
    optional_email,
    optional_openid,
    optional_phone,
    phone_search_digits,
    phone_search_national,
    same_phone,
    sms_warning,
)
from meterdesk.shared.errors import ValidationError


@pytest.mark.parametrize(
    "typed",
    [
        "13800138000",
        "138 0013 8000",
        "138-0013-8000",
        " 138.0013.8000 ",
        "(138) 0013 8000",
        "+86 138 0013 8000",
        "+86-13800138000",
        "0086 138 0013 8000",
        "008613800138000",
        "+8613800138000",
        "１３８００１３８０００",  # full-width digits from a Chinese input method
        "＋86 138 0013 8000",
        "138\u30000013\u30008000",  # the ideographic space
    ],
)
def test_a_mainland_mobile_in_any_usual_spelling_is_stored_as_e164(typed: str) -> None:
    assert normalise_phone(typed) == "+8613800138000"


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("010 8888 8888", "+861088888888"),  # Beijing landline with its area code
        ("(021) 1234-5678", "+862112345678"),  # Shanghai
        ("0755-8888 8888", "+8675588888888"),  # Shenzhen
        ("+86 10 8888 8888", "+861088888888"),
        ("+852 2123 4567", "+85221234567"),  # Hong Kong, with +
        ("+852 6123 4567", "+85261234567"),
        ("+886 912 345 678", "+886912345678"),  # Taiwan mobile
        ("+1 650 253 0000", "+16502530000"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_landlines_and_foreign_numbers_with_plus_are_stored_as_e164(
    typed: str, stored: str
) -> None:
    assert normalise_phone(typed) == stored


def test_a_number_without_plus_is_read_in_the_region_given() -> None:
    assert normalise_phone("2123 4567", "HK") == "+85221234567"
    with pytest.raises(ValidationError):
        normalise_phone("2123 4567")  # 8 digits are no mainland number


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("138 0013 800", "phone: '138 0013 800' is not a valid number for CN (10 digits; mainland mobiles have 11)"),
        ("138001380000", "phone: '138001380000' is not a valid number for CN (12 digits; mainland mobiles have 11)"),
        ("+86 12345", "phone: '+86 12345' is not a valid number for CN (5 digits;"),
        ("14012345678", "phone: '14012345678' is not a valid number for CN (11 digits; "
                        "no mainland mobile network uses 140)"),
        ("8888 8888", "phone: '8888 8888' is not a valid number for CN (8 digits; landlines: 0, the area code"),
        ("+852 1234", "phone: '+852 1234' is too short for HK (4 digits; Hong Kong numbers have 8 digits)"),
        ("+1 650 253 00001", "phone: '+1 650 253 00001' is too long for US (11 digits)"),
        ("+1 150 253 0000", "phone: '+1 150 253 0000' is not a number in use in US "
                            "(10 digits, none begins like this)"),
        ("+999 1234", "phone: '+999 1234' is not a phone number (no country code in use after +)"),
        ("123", "phone: '123' is not a valid number for CN (3 digits;"),
        ("1", "phone: '1' is not a phone number"),
    ],
)  # fmt: skip
def test_a_number_of_the_wrong_length_or_range_is_refused_with_the_reason(
    typed: str, said: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        normalise_phone(typed)
    assert str(raised.value).startswith(said)


@pytest.mark.parametrize(
    "typed",
    [
        "abc",
        "1380013800a",
        "13800138ABC",  # phonenumbers would read letters as keypad digits
        "1-800-FLOWERS",
        "138 0013 8000 ext. 12",
        "138+00138000",
        "13800138000;13900139000",
        "tel:13800138000",
        "=1+13800138000",
    ],
)
def test_letters_and_other_signs_are_refused(typed: str) -> None:
    with pytest.raises(ValidationError, match=r"is not a phone number \(digits, spaces and dashes"):
        normalise_phone(typed)


def test_the_error_names_the_field_it_was_given() -> None:
    with pytest.raises(ValidationError, match=r"^customer_phone: '138' is not"):
        normalise_phone("138", field="customer_phone")
    with pytest.raises(ValidationError, match=r"^operator_addresses\[1\]: 'a@b' is not"):
        normalise_email("a@b", field="operator_addresses[1]")


@pytest.mark.parametrize("blank", ["", "   ", "\u3000"])
def test_a_required_value_must_not_be_blank(blank: str) -> None:
    with pytest.raises(ValidationError, match="phone: must not be empty"):
        normalise_phone(blank)
    with pytest.raises(ValidationError, match="email: must not be empty"):
        normalise_email(blank)


@pytest.mark.parametrize("blank", [None, "", "  "])
def test_an_optional_value_left_out_is_none(blank: str | None) -> None:
    assert optional_phone(blank) is None
    assert optional_email(blank) is None


def test_an_optional_value_given_is_checked_as_a_required_one() -> None:
    assert optional_phone(" 139 0000 0000 ") == "+8613900000000"
    assert optional_email(" Li@Example.COM ") == "Li@example.com"
    with pytest.raises(ValidationError):
        optional_phone("139")
    with pytest.raises(ValidationError):
        optional_email("li@")


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("li@example.com", "li@example.com"),
        ("  Zhang.Wei@EXAMPLE.COM ", "Zhang.Wei@example.com"),  # the domain is lower-cased
        ("张伟@例子.中国", "张伟@例子.中国"),  # internationalised
        ("a@b.c", "a@b.c"),
    ],
)
def test_an_email_is_stored_in_its_normal_form(typed: str, stored: str) -> None:
    assert normalise_email(typed) == stored
    assert normalise_email(stored) == stored  # normalising twice changes nothing


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("abc@", "There must be something after the @-sign"),
        ("a@b", "It should have a period"),
        ("abc", "must have an @-sign"),
        ("@example.com", "There must be something before the @-sign"),
        ("a b@example.com", "invalid characters before the @-sign: SPACE"),
        ("a@@example.com", "invalid characters"),
        ("li@localhost", "It should have a period"),
        ("li@example..com", "two periods in a row"),
    ],
)
def test_a_bad_email_is_refused_with_the_libraries_reason(typed: str, reason: str) -> None:
    with pytest.raises(ValidationError) as raised:
        normalise_email(typed)
    message = str(raised.value)
    assert message.startswith(f"email: {typed.strip()!r} is not an e-mail address (")
    assert reason in message


def test_no_dns_is_asked() -> None:
    """The machines that run meterdesk may have no internet: a domain that does not exist is
    accepted (syntax only)."""
    assert normalise_email("li@no-such-domain-meterdesk.example.com")


def test_a_stored_number_splits_as_providers_need_it() -> None:
    assert E164.of("+8613900000000") == E164(86, "13900000000")
    assert E164.of("139 0000 0000") == E164(86, "13900000000")  # stored before the check
    assert E164.of("+85261234567") == E164(852, "61234567")
    assert str(E164.of("010-8888-8888")) == "+861088888888"
    with pytest.raises(ValidationError, match="phone: '139' is not a valid number"):
        E164.of("139")


@pytest.mark.parametrize(
    ("stored", "landline"),
    [
        ("+861065529988", True),  # Beijing
        ("+8657188888888", True),  # Hangzhou
        ("+85221234567", True),  # Hong Kong fixed
        ("010-6552-9988", True),  # stored before the check: read as entered now
        ("+8613900000000", False),
        ("+85261234567", False),  # Hong Kong mobile
        ("+12015550123", False),  # US: fixed and mobile ranges are the same, so maybe a mobile
        ("139", False),  # unreadable: the adapters refuse it with their own reason
    ],
)
def test_only_a_number_known_to_be_a_fixed_line_is_a_landline(stored: str, landline: bool) -> None:
    assert is_landline(stored) is landline


def test_a_landline_entered_is_warned_about_sms_and_a_mobile_is_not() -> None:
    assert sms_warning("+861065529988") == (
        "phone: +86 10 6552 9988 is a landline: it cannot receive SMS (voice calls reach it); "
        "add a mobile number for SMS"
    )
    assert sms_warning("+861065529988", field="customer_phone").startswith("customer_phone: +86 10")
    assert sms_warning("+8613900000000") is None
    assert sms_warning("+12015550123") is None
    assert sms_warning(None) is None


@pytest.mark.parametrize(
    ("query", "digits"),
    [
        ("138 0013 8000", "13800138000"),
        ("138-0013", "1380013"),
        ("+86 138", "86138"),
        ("0086 138", "86138"),  # the international prefix: stored as +
        ("１３８", "138"),
        ("Li Lei", None),
        ("A-101", None),
        ("", None),
    ],
)
def test_a_phone_like_search_looks_for_its_digits(query: str, digits: str | None) -> None:
    assert phone_search_digits(query) == digits


@pytest.mark.parametrize(
    ("query", "national"),
    [
        ("+86 138 0013 8000", "13800138000"),
        ("0086 10 6552 9988", "1065529988"),
        ("+852 6123 4567", "61234567"),
        ("+86 138", None),  # not a whole number
        ("Li Lei", None),
    ],
)
def test_a_whole_number_searched_for_also_looks_for_its_national_digits(
    query: str, national: str | None
) -> None:
    assert phone_search_national(query) == national


@pytest.mark.parametrize(
    ("stored", "e164", "same"),
    [
        ("+8613800138000", "+8613800138000", True),
        ("13800138000", "+8613800138000", True),  # stored before numbers were normalised
        ("138-0013-8000", "+8613800138000", True),
        (" 0086 138 0013 8000 ", "+8613800138000", True),
        ("010 6552 9988", "+861065529988", True),
        ("13800138001", "+8613800138000", False),
        ("138 0013 800", "+8613800138000", False),  # unreadable: never a valid number
        (None, None, True),
        ("", None, True),
        (None, "+8613800138000", False),
        ("13800138000", None, False),
    ],
)
def test_a_stored_phone_is_compared_as_a_number_not_as_text(
    stored: str | None, e164: str | None, same: bool
) -> None:
    assert same_phone(stored, e164) is same


@pytest.mark.parametrize(
    "openid",
    ["oAbC1234567890_defGHIJK-lmno", "  oAbC1234567890_defGHIJK-lmno ", "oMINI-test", "o" * 64],
)
def test_an_openid_of_letters_digits_underscore_and_dash_is_kept_as_given(openid: str) -> None:
    assert normalise_openid(openid) == openid.strip()


@pytest.mark.parametrize(
    "given",
    [
        "13800138000 wang",
        "oAbC",
        "o" * 65,
        "https://mp.weixin.qq.com/oAbC123",
        "oAbC 1234567",
        "王芳微信",
    ],
)
def test_anything_else_pasted_for_an_openid_is_refused_with_the_rule(given: str) -> None:
    with pytest.raises(
        ValidationError, match=r"wechat_mini_openid: .* is not a WeChat openid \(6 to 64"
    ):
        normalise_openid(given, field="wechat_mini_openid")


def test_a_blank_optional_openid_is_none() -> None:
    assert optional_openid(None) is None and optional_openid("  ") is None
