"""Provider signatures against the known-answer vectors in the providers' documentation, and
the webhook signature a receiver checks with ``verify_webhook``."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from meterdesk.notifications.channels import aliyun, tencent
from meterdesk.notifications.channels.base import PermanentDeliveryError
from meterdesk.notifications.channels.webhook import sign_webhook, verify_webhook

# Aliyun's "签名机制" example for SendSms (AccessKeyId testId, secret testSecret).
ALIYUN_EXAMPLE = {
    "AccessKeyId": "testId",
    "Action": "SendSms",
    "Format": "XML",
    "OutId": "123",
    "PhoneNumbers": "15300000001",
    "RegionId": "cn-hangzhou",
    "SignName": "阿里云短信测试专用",
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
    "SignatureVersion": "1.0",
    "TemplateCode": "SMS_71390007",
    "TemplateParam": '{"customer":"test"}',
    "Timestamp": "2017-07-12T02:42:19Z",
    "Version": "2017-05-25",
}

# Tencent Cloud's TC3-HMAC-SHA256 example (CVM DescribeInstances, timestamp 1551113065).
TENCENT_PAYLOAD = (
    b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
)
TENCENT_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "Host": "cvm.tencentcloudapi.com",
}
TENCENT_SECRET = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE"  # noqa: S105 - the documented example key


def test_aliyun_percent_encoding_follows_rfc3986_not_form_encoding() -> None:
    assert aliyun.percent_encode("a b*c~d/e+f") == "a%20b%2Ac~d%2Fe%2Bf"
    assert aliyun.percent_encode("阿") == "%E9%98%BF"


def test_aliyun_string_to_sign_matches_the_documented_example() -> None:
    to_sign = aliyun.string_to_sign("GET", ALIYUN_EXAMPLE)
    assert to_sign.startswith("GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML")
    assert "SignName%3D%25E9%2598%25BF%25E9%2587%258C" in to_sign
    assert to_sign.endswith("Timestamp%3D2017-07-12T02%253A42%253A19Z%26Version%3D2017-05-25")


def test_aliyun_signature_matches_the_documented_example() -> None:
    assert aliyun.sign("testSecret", "GET", ALIYUN_EXAMPLE) == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_aliyun_parameter_order_does_not_matter_but_every_value_does() -> None:
    shuffled = dict(reversed(list(ALIYUN_EXAMPLE.items())))
    assert aliyun.sign("testSecret", "GET", shuffled) == "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    changed = {**ALIYUN_EXAMPLE, "OutId": "124"}
    assert aliyun.sign("testSecret", "GET", changed) != "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_aliyun_numbers_drop_the_mainland_prefix() -> None:
    assert aliyun.mainland_number("+8613900000000") == "13900000000"  # as stored now
    assert aliyun.mainland_number("+86 139-0000-0000") == "13900000000"
    assert aliyun.mainland_number("139 0000 0000") == "13900000000"  # stored before the check
    assert aliyun.mainland_number("+861088888888") == "1088888888"  # Beijing landline
    assert aliyun.mainland_number("+85261234567") == "85261234567"


@pytest.mark.parametrize("stored", ["139", "138 0013 800", "+86 12345", "abc", ""])
def test_a_stored_number_no_provider_can_use_is_refused_with_the_reason(stored: str) -> None:
    """Before, "138 0013 800" went to Aliyun as 1380013800 and "+86 12345" as 12345: the provider
    refused them days after entry, or (one digit off) reached somebody else."""
    for convert in (aliyun.mainland_number, tencent.e164):
        with pytest.raises(PermanentDeliveryError, match=r"^voice: cannot send to the stored"):
            convert(stored, "voice")


def test_an_sms_number_refuses_a_landline_that_a_call_still_reaches() -> None:
    """Voice calls reach a landline; SMS cannot, so the SMS form refuses it with the reason
    before the provider is asked. A number that may be a mobile goes as before."""
    for convert in (aliyun.sms_mainland_number, tencent.sms_e164):
        with pytest.raises(
            PermanentDeliveryError,
            match=r"^sms: landline: SMS cannot reach \+86 10 8888 8888; use voice or add a mobile",
        ):
            convert("+861088888888", "sms")
    assert aliyun.mainland_number("+861088888888", "voice") == "1088888888"
    assert tencent.e164("+861088888888", "voice") == "+861088888888"
    assert aliyun.sms_mainland_number("+8613900000000") == "13900000000"
    assert tencent.sms_e164("+12015550123") == "+12015550123"  # fixed or mobile: cannot tell


def test_tencent_canonical_request_and_string_to_sign_match_the_documented_example() -> None:
    assert tencent.sha256_hex(TENCENT_PAYLOAD) == (
        "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    canonical = tencent.canonical_request(
        "POST", TENCENT_HEADERS, ["content-type", "host"], TENCENT_PAYLOAD
    )
    assert canonical == (
        "POST\n/\n\ncontent-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n"
        "\ncontent-type;host\n35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == (
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    )
    assert tencent.string_to_sign(1551113065, "cvm", canonical) == (
        "TC3-HMAC-SHA256\n1551113065\n2019-02-25/cvm/tc3_request\n"
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    )


def test_tencent_signature_matches_the_documented_example() -> None:
    canonical = tencent.canonical_request(
        "POST", TENCENT_HEADERS, ["content-type", "host"], TENCENT_PAYLOAD
    )
    to_sign = tencent.string_to_sign(1551113065, "cvm", canonical)
    assert tencent.signature(TENCENT_SECRET, 1551113065, "cvm", to_sign) == (
        "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )
    header = tencent.authorization(
        secret_id="AKIDEXAMPLE",  # noqa: S106 - a key id, not a secret
        secret_key=TENCENT_SECRET,
        service="cvm",
        timestamp=1551113065,
        headers=TENCENT_HEADERS,
        signed_headers=["host", "content-type"],
        payload=TENCENT_PAYLOAD,
    )
    assert header == (
        "TC3-HMAC-SHA256 Credential=AKIDEXAMPLE/2019-02-25/cvm/tc3_request, "
        "SignedHeaders=content-type;host, "
        "Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    )


def test_tencent_credential_date_is_the_utc_date_not_beijing() -> None:
    # 1551113065 is 2019-02-26 00:44 in Beijing but still 2019-02-25 in UTC.
    assert tencent.credential_scope(1551113065, "sms") == "2019-02-25/sms/tc3_request"


def test_tencent_numbers_are_e164() -> None:
    assert tencent.e164("+8613900000000") == "+8613900000000"  # as stored now
    assert tencent.e164("139 0000 0000") == "+8613900000000"  # stored before the check
    assert tencent.e164("0086 139 0000 0000") == "+8613900000000"
    assert tencent.e164("+85261234567") == "+85261234567"


NOW = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
STAMP = int(NOW.timestamp())
BODY = b'{"event":"supply_cut","id":"7"}'
KEY = "whsec-unit"


def verify(
    *,
    key: str = KEY,
    timestamp: str = str(STAMP),
    body: bytes = BODY,
    signature: str | None = None,
    now: datetime = NOW,
) -> bool:
    signed = sign_webhook(KEY, STAMP, BODY) if signature is None else signature
    return verify_webhook(secret=key, timestamp=timestamp, body=body, signature=signed, now=now)


def test_webhook_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(KEY.encode(), f"{STAMP}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign_webhook(KEY, STAMP, BODY) == f"v1={expected}"


def test_verify_webhook_accepts_a_fresh_genuine_request() -> None:
    assert verify()
    assert verify(now=NOW + timedelta(minutes=4))


def test_verify_webhook_refuses_tampering_wrong_secrets_and_replays() -> None:
    assert not verify(key="another-key")
    assert not verify(body=BODY + b" ")
    assert not verify(timestamp=str(STAMP + 1))
    assert not verify(now=NOW + timedelta(minutes=6))
    assert not verify(timestamp="yesterday")
    assert not verify(signature="v1=" + "0" * 64)


def test_verify_webhook_accepts_any_of_several_signatures_during_rotation() -> None:
    both = f"{sign_webhook('old-key', STAMP, BODY)}, {sign_webhook(KEY, STAMP, BODY)}"
    assert verify(signature=both)
