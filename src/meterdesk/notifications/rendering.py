"""Turning an outbox row into words, at delivery time (so a fixed template fixes waiting messages).

Templates live in ``templates/<language>/<template>.txt.j2`` with the blocks ``subject``,
``body`` and optionally ``voice`` (text-to-speech; falls back to ``body``). E-mail HTML comes
from ``templates/email.html.j2``, which lays out the same subject and body with autoescaping
on. Templates run in Jinja's sandbox with undefined names as errors, so a broken template fails
the message with a clear error instead of sending a half-empty text.

Before rendering, params become display strings (:func:`template_values`): money with two places
(the templates add 元 / CNY); a quantity account's quantities (``quantity_left``,
``quantity_threshold``, beside ``unit`` kWh or m³) with two places, never as money; instants in
the site's local time; alarm levels and utilities as words. The same strings are what SMS and
voice providers receive as template parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment

from meterdesk.shared.errors import MeterdeskError
from meterdesk.shared.money import FEN
from meterdesk.shared.time import parse_instant

TEMPLATE_DIR = Path(__file__).parent / "templates"
MONEY_FIELDS = frozenset({"balance", "threshold", "amount", "repaid", "limit"})
# A quantity account (购量) holds kWh or m³: its messages carry these beside ``unit``.
QUANTITY_FIELDS = frozenset({"quantity_left", "quantity_threshold"})
QUANTITY_STEP = Decimal("0.01")
TIME_FIELDS = frozenset({"at", "since", "credited_at"})
LOCAL_TIME_FORMAT = "%Y-%m-%d %H:%M"

_WORDS: dict[str, dict[str, dict[str, str]]] = {
    "zh-CN": {
        "customer": {"": "客户"},
        "place": {"room": "房间{}", "account": "账户{}", "": "账户"},
        "level": {"1": "一级", "2": "二级", "3": "三级"},
        "utility": {"electricity": "电费", "water": "水费", "mixed": "水电费"},
        "supply": {"electricity": "电", "water": "水", "mixed": "水电"},
        "left": {"electricity": "剩余电量", "water": "剩余水量", "mixed": "剩余量"},
        "cut": {"electricity": "拉闸断电", "water": "关阀停水", "mixed": "停止供应"},
        "restore": {"electricity": "合闸送电", "water": "开阀供水", "mixed": "恢复供应"},
        "command": {
            "relay_trip": "拉闸",
            "relay_close": "合闸",
            "valve_close": "关阀",
            "valve_open": "开阀",
            "protect_on": "保电",
            "protect_off": "解除保电",
        },
        "channel": {
            "sms": "短信",
            "voice": "语音电话",
            "email": "电子邮件",
            "wechat": "微信公众号",
            "wechat_mini": "微信小程序",
            "push": "App 推送",
            "webhook": "Webhook",
            "log": "日志",
        },
    },
    "en": {
        "customer": {"": "customer"},
        "place": {"room": "room {}", "account": "account {}", "": "account"},
        "level": {"1": "level 1", "2": "level 2", "3": "level 3"},
        "utility": {"electricity": "electricity", "water": "water", "mixed": "utility"},
        "supply": {"electricity": "power", "water": "water", "mixed": "supply"},
        "left": {"electricity": "electricity left", "water": "water left", "mixed": "left"},
        "cut": {"electricity": "switched off", "water": "shut off", "mixed": "cut"},
        "restore": {"electricity": "switched on", "water": "turned on", "mixed": "restored"},
        "command": {
            "relay_trip": "trip",
            "relay_close": "close",
            "valve_close": "valve close",
            "valve_open": "valve open",
            "protect_on": "protect on",
            "protect_off": "protect off",
        },
        "channel": {
            "sms": "SMS",
            "voice": "voice call",
            "email": "e-mail",
            "wechat": "WeChat",
            "wechat_mini": "WeChat mini program",
            "push": "app push",
            "webhook": "webhook",
            "log": "log",
        },
    },
}


class RenderError(MeterdeskError):
    """A template is missing or broken, or the params do not fit it."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    voice: str
    html: str
    values: dict[str, str]


def format_money(value: object) -> str:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise RenderError(f"{value!r} is not an amount of money") from None
    return f"{amount.quantize(FEN):f}"


def format_quantity(value: object) -> str:
    """kWh or m³ with two places (what a purchase buys is whole hundredths)."""
    try:
        quantity = Decimal(str(value))
    except InvalidOperation:
        raise RenderError(f"{value!r} is not a quantity") from None
    return f"{quantity.quantize(QUANTITY_STEP):f}"


def format_local_time(value: object, tz: ZoneInfo) -> str:
    instant = value if isinstance(value, datetime) else parse_instant(str(value))
    return instant.astimezone(tz).strftime(LOCAL_TIME_FORMAT)


def _format_number(value: object) -> str:
    try:
        number = Decimal(str(value))
    except InvalidOperation:  # not a ValueError: it escaped render and looked like a bug
        raise RenderError(f"{value!r} is not a number") from None
    text = f"{number.quantize(Decimal('0.1')):f}"
    return text.removesuffix(".0")


def template_values(params: Mapping[str, Any], language: str, tz: ZoneInfo) -> dict[str, str]:
    """Params as the display strings templates and SMS/voice providers receive."""
    values: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        if name in MONEY_FIELDS:
            values[name] = format_money(value)
        elif name in QUANTITY_FIELDS:
            values[name] = format_quantity(value)
        elif name in TIME_FIELDS:
            values[name] = format_local_time(value, tz)
        elif name == "days_left":
            values[name] = _format_number(value)
        else:
            values[name] = str(value)
    values.setdefault("customer", _WORDS[language]["customer"][""])
    values.setdefault("organisation", "meterdesk")
    values.update(_words(values, language))
    return values


def _words(values: Mapping[str, str], language: str) -> dict[str, str]:
    words = _WORDS[language]
    utility = values.get("utility", "electricity")
    found = {
        "utility_name": words["utility"].get(utility, utility),
        "supply_name": words["supply"].get(utility, utility),
        "left_name": words["left"].get(utility, utility),
        "cut_name": words["cut"].get(utility, utility),
        "restore_name": words["restore"].get(utility, utility),
    }
    place = words["place"]
    found["place"] = next(
        (place[key].format(values[key]) for key in ("room", "account") if key in values),
        place[""],
    )
    if "level" in values:
        found["level_name"] = words["level"].get(values["level"], values["level"])
    if "command" in values:
        found["command_name"] = words["command"].get(values["command"], values["command"])
    if "channel" in values:
        found["channel_name"] = words["channel"].get(values["channel"], values["channel"])
    return found


class Renderer:
    """Renders one message; ``override_dir`` (same layout as ``templates/``) wins over the
    built-in templates, so operators can change wording without a release."""

    def __init__(self, override_dir: Path | None = None) -> None:
        loaders: list[BaseLoader] = [FileSystemLoader(TEMPLATE_DIR)]
        if override_dir is not None:
            loaders.insert(0, FileSystemLoader(override_dir))
        self.environment = SandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
        )
        self.environment.filters["money"] = format_money

    def render(
        self, *, template: str, language: str, params: Mapping[str, Any], tz: ZoneInfo
    ) -> Rendered:
        try:
            values = template_values(params, language, tz)
            text = self.environment.get_template(f"{language}/{template}.txt.j2")
            context = text.new_context(dict(values))
            blocks = {name: "".join(block(context)).strip() for name, block in text.blocks.items()}
            subject, body = blocks["subject"], blocks["body"]
            html = self.environment.get_template("email.html.j2").render(
                language=language, subject=subject, paragraphs=body.splitlines()
            )
        except (TemplateError, KeyError, ValueError, MeterdeskError) as error:
            raise RenderError(f"template {language}/{template}: {error}") from error
        return Rendered(subject, body, blocks.get("voice") or body, html, values)
