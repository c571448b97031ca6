"""The customer page's edit form and the opening wizard show the services' English input errors
in the viewer's language (web/form_errors.py): every message their checks make is in the table,
an unknown message is shown as it is, English viewers read the message itself, and a refused
form changes nothing."""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Callable
from typing import Any

import pytest
from apikit import World
from consolekit import Console

from meterdesk.api.schemas.places import CustomerIn, CustomerPatch
from meterdesk.billing.quantity_model import parse_credit_unit
from meterdesk.shared.contacts import normalise_email, normalise_openid, normalise_phone
from meterdesk.shared.errors import ValidationError
from meterdesk.sites import service as sites
from meterdesk.sites.tables import customers
from meterdesk.web import form_errors
from meterdesk.web.form_errors import translate
from meterdesk.web.forms import build
from meterdesk.web.routes.wizard import WizardData, _check

# (message, shown in zh-CN): one or more examples of every shape of the table.
EXAMPLES = [
    ("name: Field required", "名称：必填"),
    ("name: String should have at least 1 character", "名称：不能为空"),
    ("customer_phone: String should have at most 40 characters", "电话：最多 40 个字符"),
    ("language: Input should be 'zh-CN' or 'en'", "通知语言：应为 'zh-CN' 或 'en'"),
    (
        "room_id: Input should be a valid integer, unable to parse string as an integer",
        "房间：应为整数",
    ),
    (
        "name: Value error, one line of text: no tab or line break (U+0009)",
        "名称：只能是一行文字：不能含制表符或换行（U+0009）",
    ),
    ("name: must not be empty", "名称：不能为空"),
    ("wechat_openid: at most 100 characters", "微信 openid（公众号）：最多 100 个字符"),
    ("language: 'fr' is not one of zh-CN, en", "通知语言：'fr' 不是 zh-CN 或 en"),
    (
        "phone: 'abc' is not a phone number (digits, spaces and dashes, with + and the country "
        "code for a number outside CN)",
        "电话：'abc' 不是电话号码（只能填数字、空格和短横线；中国大陆以外的号码以 + 和国家代码开头）",
    ),
    ("phone: '1' is not a phone number", "电话：'1' 不是电话号码"),
    (
        "phone: '+999 123' is not a phone number (no country code in use after +)",
        "电话：'+999 123' 不是电话号码（+ 后面不是在用的国家代码）",
    ),
    ("phone: '+86' is not a phone number (too short)", "电话：'+86' 不是电话号码（太短）"),
    ("phone: '9' is not a phone number (too long)", "电话：'9' 不是电话号码（太长）"),
    (
        "phone: '138 0013 800' is not a valid number for CN (10 digits; mainland mobiles have 11)",
        "电话：'138 0013 800' 不是有效的中国大陆号码（10 位；手机号为 11 位）",
    ),
    (
        "customer_phone: '120 0013 8000' is not a valid number for CN (11 digits; no mainland "
        "mobile network uses 120)",
        "电话：'120 0013 8000' 不是有效的中国大陆号码（11 位；没有手机号段以 120 开头）",
    ),
    (
        "phone: '010 1234' is not a valid number for CN (7 digits; landlines: 0, the area code "
        "and 7–8 digits; mobiles: 11 digits from 1)",
        "电话：'010 1234' 不是有效的中国大陆号码（7 位；固话：0、区号加 7–8 位号码；手机：以 1 开头的 11 位）",
    ),
    (
        "phone: '+852 123456789' is not a number in use in HK (9 digits, none begins like this)",
        "电话：'+852 123456789' 不是 HK 在用的号码（9 位，没有号码这样开头）",
    ),
    ("phone: '+44 20' is too short for GB (2 digits)", "电话：'+44 20' 对 GB 来说太短（2 位）"),
    (
        "phone: '+852 1234' is too short for HK (4 digits; Hong Kong numbers have 8 digits)",
        "电话：'+852 1234' 对 HK 来说太短（4 位；当地号码为 8 位）",
    ),
    (
        "phone: '+853 123456789' is too long for MO (9 digits; Macau numbers have 8 digits)",
        "电话：'+853 123456789' 对 MO 来说太长（9 位；当地号码为 8 位）",
    ),
    (
        "phone: '+1 1234' is not a valid number for US (4 digits)",
        "电话：'+1 1234' 不是有效的 US 号码（4 位）",
    ),
    (
        "email: 'x' is not an e-mail address (An email address must have an @-sign.)",
        "邮箱：'x' 不是邮箱地址（邮箱地址必须有 @）",
    ),
    (
        "customer_email: '@x.com' is not an e-mail address (There must be something before the "
        "@-sign.)",
        "邮箱：'@x.com' 不是邮箱地址（@ 前面不能为空）",
    ),
    (
        "customer_email: 'tenant@' is not an e-mail address (There must be something after the "
        "@-sign.)",
        "邮箱：'tenant@' 不是邮箱地址（@ 后面不能为空）",
    ),
    (
        "email: 'a@b' is not an e-mail address (The part after the @-sign is not valid. It "
        "should have a period.)",
        "邮箱：'a@b' 不是邮箱地址（@ 后面的部分需要有点号（如 example.com））",
    ),
    (
        "email: 'a@example.123' is not an e-mail address (The part after the @-sign is not valid. It "
        "is not within a valid top-level domain.)",
        "邮箱：'a@example.123' 不是邮箱地址（@ 后面的部分不是以在用的顶级域名结尾）",
    ),
    (
        "email: 'a@x.invalid' is not an e-mail address (The part after the @-sign is a "
        "special-use or reserved name that cannot be used with email.)",
        "邮箱：'a@x.invalid' 不是邮箱地址（@ 后面是保留名称，无法接收邮件）",
    ),
    (
        "email: 'a@b..com' is not an e-mail address (An email address cannot have two periods in "
        "a row.)",
        "邮箱：'a@b..com' 不是邮箱地址（邮箱地址不能有两个连续的点号）",
    ),
    (
        "email: 'a@-b.com' is not an e-mail address (An email address cannot have a hyphen "
        "immediately after the @-sign.)",
        "邮箱：'a@-b.com' 不是邮箱地址（短横线不能出现在开头、结尾或紧挨 @ 的位置）",
    ),
    (
        "email: 'a b@c.com' is not an e-mail address (The email address contains invalid "
        "characters before the @-sign: SPACE.)",
        "邮箱：'a b@c.com' 不是邮箱地址（@ 前面有不允许的字符：SPACE）",
    ),
    (
        "email: 'a@b_c.com' is not an e-mail address (The part after the @-sign contains invalid "
        "characters: '_'.)",
        "邮箱：'a@b_c.com' 不是邮箱地址（@ 后面有不允许的字符：'_'）",
    ),
    (
        "email: 'a＠b.com' is not an e-mail address (The email address has the \"full-width\" "
        "at-sign (@) character instead of a regular at-sign.)",
        "邮箱：'a＠b.com' 不是邮箱地址（地址中用了全角的 ＠，应为半角 @）",
    ),
    (
        "email: 'a\"b@c.com' is not an e-mail address (a reason email-validator adds one day)",
        "邮箱：'a\"b@c.com' 不是邮箱地址（a reason email-validator adds one day）",
    ),
    (
        "customer_wechat_mini_openid: 'o 1' is not a WeChat openid (6 to 64 letters, digits, _ "
        "or -; WeChat's are 28, like oAbC…)",
        "微信 openid（小程序）：'o 1' 不是微信 openid（6 到 64 个字母、数字、_ 或 -；"
        "微信的 openid 为 28 位，如 oAbC…）",
    ),
    (
        "credit_unit: 'litres' is not 'money' or 'quantity' (购量: kWh or m³ bought ahead)",
        "余额单位：'litres' 不是 'money'（金额）或 'quantity'（购量：预购 kWh 或 m³）",
    ),
    (
        "choose a room and a customer (or enter a new customer's name)",
        "请选择房间和客户（或填写新客户的名称）",
    ),
    (
        "enter the account number and give at least one meter a tariff",
        "请填写账户号，并至少为一块表选择电价方案",
    ),
    (
        "putting credit on an account needs the cashier or admin role",
        "给账户充值需要收银员或管理员角色",
    ),
    ("customer 42 not found", "客户 42 不存在"),
    ("account 'A-101' already exists", "账户 'A-101' 已存在"),
    ("meter 7 already belongs to an open account", "表计 7 已属于一个在用账户"),
    ("tariff 9 not found", "电价方案 9 不存在"),
    (
        "meter 7 measures water but the tariff prices electricity",
        "表计 7 计量的是水，而该价格方案计价的是电",
    ),
    (
        "overdraft_limit: String should match pattern '^[0-9]{1,12}(\\.[0-9]{1,2})?$'",
        "允许透支：应为金额（元），如 100 或 100.50（最多两位小数）",
    ),
    (
        "meters.0.reading: String should match pattern '^[0-9]{1,14}(\\.[0-9]{1,4})?$'",
        "开户读数：应为读数，如 1000 或 1000.25（最多四位小数）",
    ),
    (
        "payment_method: Input should be 'cash', 'card', 'transfer', 'wechat', 'alipay' or "
        "'online'",
        "支付方式：应为 'cash', 'card', 'transfer', 'wechat', 'alipay' 或 'online'",
    ),
    (
        "credit_unit: quantity credit (购量) needs platform billing (后台计费); a meter billing "
        "its own money keeps no quantity",
        "余额单位：购量需要后台计费（远程费控）；表端计费的表计不记录剩余量",
    ),
    (
        "credit_unit: a quantity-credit account (购量) holds one meter, not 2",
        "余额单位：购量账户只能有一块表，不能是 2 块",
    ),
    (
        "overdraft_limit: a quantity-credit account (购量) has none; it is cut when what it "
        "bought is used up",
        "允许透支：购量账户不能透支；购买的量用完即拉闸/关阀",
    ),
    (
        "name: String should have at least 1 character; phone: String should have at most 40 "
        "characters",
        "名称：不能为空；电话：最多 40 个字符",
    ),
    # the system notices' form
    ("subject: required", "标题：必填"),
    ("floor: choose one", "楼层：请选择一个"),
    ("subject: at most 60 characters (61 given)", "标题：最多 60 个字符（填了 61 个）"),
    (
        "subject: one line without control characters (U+000A)",
        "标题：只能是一行文字，不能含控制字符（U+000A）",
    ),
    ("text: a control character (U+0000) is not allowed", "正文：不能含控制字符（U+0000）"),
    (
        "rooms: give one or more room numbers, separated by commas",
        "指定房间：请填写一个或多个房间号，用逗号分隔",
    ),
    ("rooms: no room 'B-909'", "指定房间：没有房间 'B-909'"),
    (
        "rooms: 'B-101' is on several floors: send to its floor",
        "指定房间：'B-101' 在多个楼层都有：请改为发送到所在楼层",
    ),
    ("scope: name at least one room", "发送到：请至少指定一个房间"),
    ("scope: at most 500 rooms in one notice", "发送到：一条通知最多 500 个房间"),
    (
        "channels: webhook is not a channel that reaches a person",
        "通知渠道：webhook 不是发给个人的通道",
    ),
    (
        "send at: 'tomorrow' is not a date and time like 2026-12-09 08:00",
        "定时发送：'tomorrow' 不是日期时间（例如 2026-12-09 08:00）",
    ),
    (
        "send at: 2026-11-01 02:00 UTC is not in the future (now 2026-12-08 01:00 UTC)",
        "定时发送：2026-11-01 02:00 UTC 不是将来的时间（现在是 2026-12-08 01:00 UTC）",
    ),
    (
        "send at: at most 90 days ahead (2027-03-01 02:00 UTC given)",
        "定时发送：最多提前 90 天（填的是 2027-03-01 02:00 UTC）",
    ),
    (
        "send at: these rooms are in sites of different time zones (Asia/Shanghai, "
        "Europe/Paris): give the time with its offset, like 2026-12-09T08:00+08:00",
        "定时发送：这些房间所在项目的时区不同（Asia/Shanghai, Europe/Paris）：请连同时差填写时间，"
        "例如 2026-12-09T08:00+08:00",
    ),
    ("building 999999 not found", "楼栋 999999 不存在"),
    (
        "no open account in this floor: nobody to send the notice to",
        "该楼层内没有在用的账户：没有可发送的对象",
    ),
]


def _email_reason(message: str) -> str:
    """email-validator's reason inside an e-mail address's message."""
    found = re.search(r" is not an e-mail address \((.+)\)$", message)
    assert found is not None, message
    return found.group(1)


@pytest.mark.parametrize(("message", "chinese"), EXAMPLES)
def test_a_known_message_is_shown_in_chinese_and_as_it_is_in_english(
    message: str, chinese: str
) -> None:
    assert translate(message, "zh-CN") == chinese
    assert translate(message, "en") == message


def test_every_shape_of_the_table_has_an_example() -> None:
    messages = [message for message, _ in EXAMPLES]
    reasons = [_email_reason(message) for message in messages if "e-mail address (" in message]
    tables: list[tuple[str, tuple[form_errors.Shape, ...], list[str]]] = [
        ("WHOLE", form_errors.WHOLE, messages),
        ("PROBLEMS", form_errors.PROBLEMS, [m.split(": ", 1)[-1] for m in messages]),
        ("EMAIL_REASONS", form_errors.EMAIL_REASONS, reasons),
    ]
    for name, table, candidates in tables:
        for shape in table:
            assert any(shape.pattern.fullmatch(c) for c in candidates), (name, shape.message)


@pytest.mark.parametrize(
    "message",
    [
        "phone: a complaint nobody wrote yet",
        "unknown_field: Field required",
        "name: Field required; something new",
        "the account number A-1 is taken",
        "phone: '1' is not a phone number, the tail clipped",
        "reading: must not be empty",  # a reading that is not a meter's opening one
    ],
)
def test_an_unknown_message_is_shown_as_it_is(message: str) -> None:
    assert not form_errors.known(message)
    assert translate(message, "zh-CN") == message


def test_no_message_is_shown_as_nothing() -> None:
    assert translate(None, "zh-CN") == "" and translate("", "en") == ""


# --- the producers' messages, all known ---------------------------------------------------------


def _said(check: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The message ``check(*args, **kwargs)`` refuses with."""
    with pytest.raises(ValidationError) as raised:
        check(*args, **kwargs)
    return str(raised.value)


PHONES = [
    "abc", "+999 123", "1", "+86", "123456789012345678901", "138 0013 800", "12312345678",
    "010 1234", "1234567890123456789", "+852 1234", "+852 123456789", "+853 123456789",
    "+1 202 555 01", "+1 999 555 0100", "+44 20", "+6112", "+1 1234", "0086 10", "138-0013-80001",
]  # fmt: skip
EMAILS = [
    "x", "@x.com", "a@b", "a@b..com", "a@localhost", "a b@c.com", "a@.com", "a@b.c-", "a@-b.com",
    "a@b@c.com", "a@example.invalid", "a@ex_ample.com", "tenant@", "a.@b.com", ".a@b.com",
    "a＠b.com", "a@example.123",
]  # fmt: skip
OPENIDS = ["o 1", "abc", "https://example.com/openid", "138 0013 8000"]
FIELDS = ["phone", "customer_phone"]


def _contact_messages() -> set[str]:
    said: set[str] = set()
    for text, field in itertools.product(PHONES, FIELDS):
        said.add(_said(normalise_phone, text, field=field))
    for text, field in itertools.product(EMAILS, ["email", "customer_email"]):
        said.add(_said(normalise_email, text, field=field))
    for text, field in itertools.product(
        OPENIDS, ["wechat_mini_openid", "customer_wechat_mini_openid"]
    ):
        said.add(_said(normalise_openid, text, field=field))
    return said


def test_every_message_of_a_phone_an_e_mail_or_an_openid_is_in_the_table() -> None:
    said = _contact_messages()
    assert len(said) >= 70, len(said)
    assert sorted(m for m in said if not form_errors.known(m)) == []
    # email-validator's reasons for the usual mistakes, too (a rare one is shown as it wrote it)
    reasons = [_email_reason(m) for m in said if "e-mail address (" in m]
    assert sorted(r for r in reasons if not form_errors.email_known(r)) == []


def test_every_message_of_the_services_and_the_request_models_is_in_the_table() -> None:
    customer = {"name": "Tenant", "language": "zh-CN"}
    said = {
        _said(lambda: sites.parse_language("fr")),
        _said(lambda: sites._name("   ", "name")),
        _said(lambda: sites._name("x" * 201, "name")),
        _said(lambda: sites._optional("x" * 101, "wechat_openid", 100)),
        _said(lambda: sites._email("a@" + "b" * 196 + ".com")),
        _said(lambda: parse_credit_unit("litres")),
        _said(lambda: _check(WizardData(), 1)),
        _said(lambda: _check(WizardData(room_id=1, customer_name="Tenant"), 2)),
    }
    for model in (CustomerIn, CustomerPatch):
        for bad in (
            {"name": ""},
            {"name": "a\tb"},
            {"name": "x" * 201},
            {"phone": "1" * 41},
            {"email": "x" * 201},
            {"wechat_openid": "x" * 101},
            {"wechat_mini_openid": "x" * 101},
            {"language": "fr"},
            {"name": "", "phone": "1" * 41, "language": "fr"},
        ):
            said.add(_said(build, model, **{**customer, **bad}))
    assert sorted(m for m in said if not form_errors.known(m)) == []


# --- through the web: the customer page ---------------------------------------------------------


def _stored(world: World) -> dict[str, Any]:
    with world.db.read() as conn:
        query = customers.select().where(customers.c.id == world.alpha.customer_id)
        return dict(conn.execute(query).mappings().one())


def _customer_form(world: World, **changed: str) -> dict[str, str]:
    now = _stored(world)
    filled = {
        "name": now["name"],
        "phone": now["phone"] or "",
        "email": now["email"] or "",
        "wechat_openid": now["wechat_openid"] or "",
        "wechat_mini_openid": now["wechat_mini_openid"] or "",
        "language": now["language"],
        "summaries": "on",
    }
    return {**filled, **changed}


# (typed over the form, shown in zh-CN, shown in en) — the page escapes quotes as &#39;
CUSTOMER_CASES = [
    (
        {"phone": "138 0013 800"},
        "电话：&#39;138 0013 800&#39; 不是有效的中国大陆号码（10 位；手机号为 11 位）",
        "phone: &#39;138 0013 800&#39; is not a valid number for CN (10 digits; mainland mobiles "
        "have 11)",
    ),
    (
        {"email": "tenant@"},
        "邮箱：&#39;tenant@&#39; 不是邮箱地址",
        "email: &#39;tenant@&#39; is not an e-mail address",
    ),
    ({"name": ""}, "名称：必填", "name: Field required"),
    ({"name": "   "}, "名称：不能为空", "name: String should have at least 1 character"),
    (
        {"wechat_mini_openid": "o 1"},
        "微信 openid（小程序）：&#39;o 1&#39; 不是微信 openid",
        "wechat_mini_openid: &#39;o 1&#39; is not a WeChat openid",
    ),
]


@pytest.mark.parametrize(
    ("typed", "chinese", "english"),
    CUSTOMER_CASES,
    ids=["phone", "e-mail", "no name", "blank name", "mini openid"],
)
def test_the_customer_forms_errors_are_in_the_viewers_language_and_change_nothing(
    world: World, typed: dict[str, str], chinese: str, english: str
) -> None:
    path = f"/customers/{world.alpha.customer_id}"
    before = _stored(world)
    for locale, shown, hidden in (("zh-CN", chinese, english), ("en", english, chinese)):
        console = Console(world.client, world.alpha, "operator", locale=locale)
        answer = console.post(path, _customer_form(world, **typed))
        assert answer.status_code == 422, answer.text
        assert 'class="alert error"' in answer.text
        assert shown in answer.text, locale
        assert hidden not in answer.text, locale
        assert _stored(world) == before


# --- through the web: the opening wizard --------------------------------------------------------

WIZARD_CASES = [
    (
        {"customer_phone": "138 0013 800"},
        "电话：&#39;138 0013 800&#39; 不是有效的中国大陆号码（10 位；手机号为 11 位）",
        "customer_phone: &#39;138 0013 800&#39; is not a valid number for CN",
    ),
    (
        {"customer_email": "tenant@"},
        "邮箱：&#39;tenant@&#39; 不是邮箱地址",
        "customer_email: &#39;tenant@&#39; is not an e-mail address",
    ),
    (
        {"customer_name": ""},
        "请选择房间和客户（或填写新客户的名称）",
        "choose a room and a customer (or enter a new customer&#39;s name)",
    ),
    (
        {"customer_wechat_mini_openid": "o 1"},
        "微信 openid（小程序）：&#39;o 1&#39; 不是微信 openid",
        "customer_wechat_mini_openid: &#39;o 1&#39; is not a WeChat openid",
    ),
]


@pytest.mark.parametrize(
    ("typed", "chinese", "english"),
    WIZARD_CASES,
    ids=["phone", "e-mail", "no name", "mini openid"],
)
def test_the_wizards_errors_are_in_the_viewers_language_and_change_nothing(
    world: World, typed: dict[str, str], chinese: str, english: str
) -> None:
    alpha = world.alpha
    first = {"room_id": alpha.spare_room_id, "customer_name": "Wizard Tenant", **typed}
    whole = {
        **first, "key": "wizard-i18n", "number": "W-7", "billing_mode": "platform",
        "overdraft_limit": "0", "meter": [alpha.spare_meter_id], "tariff": [str(alpha.tariff_id)],
        "reading": ["0"], "initial_credit": "0",
    }  # fmt: skip
    with world.db.read() as conn:
        before = conn.execute(customers.select()).mappings().all()
    for locale, shown, hidden in (("zh-CN", chinese, english), ("en", english, chinese)):
        console = Console(world.client, alpha, "admin", locale=locale)
        for path, data in (
            ("/accounts/open/step", {**first, "step": 1}),
            ("/accounts/open", whole),
        ):
            answer = console.post(path, data)
            assert answer.status_code == 422, answer.text
            assert shown in answer.text, (locale, path)
            assert hidden not in answer.text, (locale, path)
    with world.db.read() as conn:
        assert conn.execute(customers.select()).mappings().all() == before
    assert world.client.get("/api/v1/accounts", params={"q": "W-7"}).json()["items"] == []


def _error_of(page: str) -> str:
    """The message of the page's error alert (partials/error.html), unescaped."""
    found = re.search(
        r'<div class="alert error"[^>]*>\s*<strong>[^<]*</strong>\s*(.*?)\s*</div>', page, re.S
    )
    assert found is not None, page
    return html.unescape(found.group(1))


def test_every_message_of_the_forms_fields_as_the_console_parses_them_is_in_the_table(
    world: World,
) -> None:
    """FastAPI's own checks of the submitted fields (a required one missing, one too long)."""
    console = Console(world.client, world.alpha, "admin", locale="en")
    path = f"/customers/{world.alpha.customer_id}"
    posts = [
        (path, _customer_form(world, name="")),
        (path, _customer_form(world, language="")),
        (path, _customer_form(world, name="x" * 201, phone="1" * 201)),
        (path, _customer_form(world, language="x" * 11)),
        ("/accounts/open/step", {"room_id": "x", "customer_name": "Tenant", "step": 1}),
        ("/accounts/open/step", {"customer_id": "x", "step": 1}),
        ("/accounts/open/step", {"customer_phone": "1" * 201, "step": 1}),
    ]
    said = set()
    for where, data in posts:
        answer = console.post(where, data)
        assert answer.status_code == 422, answer.text
        said.add(_error_of(answer.text))
    assert len(said) == len(posts), said
    assert sorted(m for m in said if not form_errors.known(m)) == []


# --- through the web: what the wizard's last step says when the account cannot be opened -------


def _opening(world: World, key: str, **typed: Any) -> dict[str, Any]:
    alpha = world.alpha
    return {
        "room_id": alpha.spare_room_id, "customer_id": alpha.customer_id, "key": key,
        "number": "W-6", "billing_mode": "platform", "overdraft_limit": "0",
        "meter": [alpha.spare_meter_id], "tariff": [str(alpha.tariff_id)], "reading": ["0"],
        "initial_credit": "0", "credit_unit": "money", **typed,
    }  # fmt: skip


def test_every_message_of_the_wizards_last_step_is_in_the_table(world: World) -> None:
    alpha = world.alpha
    two = [alpha.spare_meter_id, alpha.preset_meter_id]
    typed: list[dict[str, Any]] = [
        {"number": alpha.account_number},  # taken
        {"meter": [alpha.meter_id]},  # opened elsewhere since the page was shown
        {"tariff": ["999999"]},
        {"overdraft_limit": "-5"},
        {"initial_credit": "1.234"},
        {"reading": ["abc"]},
        {"billing_mode": "x"},
        {"payment_method": "x"},
        {"number": "x" * 65},
        {"credit_unit": "quantity", "billing_mode": "meter"},
        {"credit_unit": "quantity", "overdraft_limit": "5"},
        {"credit_unit": "quantity", "meter": two, "tariff": [str(alpha.tariff_id)] * 2,
         "reading": ["0", "0"]},
    ]  # fmt: skip
    console = Console(world.client, alpha, "admin", locale="en")
    said = set()
    for index, values in enumerate(typed):
        answer = console.post("/accounts/open", _opening(world, f"last-{index}", **values))
        assert answer.status_code == 422, (values, answer.text)
        found = re.search(
            r'<p class="alert error">(.*?)</p>|</strong>\s*(.*?)\s*</div>', answer.text, re.S
        )
        assert found is not None, answer.text
        said.add(html.unescape(found.group(1) or found.group(2)))
    assert len(said) == len(typed), said
    assert sorted(m for m in said if not form_errors.known(m)) == []


def test_a_taken_account_number_is_said_in_the_wizard_in_chinese_not_a_server_error(
    world: World,
) -> None:
    """The number's ledger accounts were created before the account row, so a taken number was
    an IntegrityError (500) instead of the conflict the service means to say."""
    taken = world.alpha.account_number
    console = Console(world.client, world.alpha, "admin", locale="zh-CN")
    answer = console.post("/accounts/open", _opening(world, "taken-1", number=taken))
    assert answer.status_code == 422, answer.text
    assert f"账户 &#39;{taken}&#39; 已存在" in answer.text
    body = {
        "number": taken,
        "customer_id": world.alpha.customer_id,
        "meters": [{"meter_id": world.alpha.spare_meter_id, "tariff_id": world.alpha.tariff_id}],
    }
    headers = {**world.alpha.auth("admin"), "Idempotency-Key": "taken-2"}
    api = world.client.post("/api/v1/accounts", json=body, headers=headers)
    assert api.status_code == 409, api.text
    assert f"account {taken!r} already exists" in api.text  # the API's English, as before
