"""Builds channel adapters from an organisation's settings, and keeps them while the settings do
not change (so a WeChat access token is reused across messages).

Settings per provider (``config``; secrets are named in ``secret_refs``):

===========  ===========  ================================================================  =================
channel      provider     config                                                            secret_refs
===========  ===========  ================================================================  =================
sms          aliyun       access_key_id, sign_name, templates, region?, base_url?           access_key_secret
voice        aliyun       access_key_id, templates, called_show_number?, play_times?, ...   access_key_secret
sms          tencent      secret_id, sdk_app_id, sign_name, templates, region?, base_url?   secret_key
voice        tencent      secret_id, voice_sdk_app_id, templates, play_times?, base_url?    secret_key
email        smtp         host, port, sender, username?, security? (starttls | tls | none)  password?
wechat       wechat       app_id, templates, base_url?                                      app_secret
wechat_mini  wechat_mini  app_id, templates, miniprogram_state?, base_url?                  app_secret
push         http         url                                                               token
webhook      webhook      url                                                               secret
log          log          —                                                                 —
===========  ===========  ================================================================  =================

``operator_addresses`` (a list) on any person channel names who hears operator events.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meterdesk.notifications.channels import aliyun, tencent, wechat, wechat_mini, wechat_token
from meterdesk.notifications.channels.base import (
    ChannelAdapter,
    HttpOptions,
    PermanentDeliveryError,
    SecretSource,
    require,
    secret,
)
from meterdesk.notifications.channels.email import SmtpEmail
from meterdesk.notifications.channels.log import LogChannel
from meterdesk.notifications.channels.push import HttpPush
from meterdesk.notifications.channels.webhook import Webhook
from meterdesk.notifications.configuration import ChannelSetting
from meterdesk.notifications.model import Channel
from meterdesk.shared.time import Clock, system_clock


@dataclass(frozen=True)
class _Build:
    setting: ChannelSetting
    secrets: SecretSource
    http: HttpOptions
    clock: Clock

    def need(self, name: str) -> Any:
        return require(self.setting.config, name, self.setting.channel.value)

    def secret(self, name: str) -> str:
        return secret(self.secrets, self.setting.secret_refs, name, self.setting.channel.value)

    def get(self, name: str, default: Any = None) -> Any:
        return self.setting.config.get(name, default)


def _aliyun(build: _Build, default_url: str) -> aliyun.AliyunClient:
    return aliyun.AliyunClient(
        access_key_id=str(build.need("access_key_id")),
        access_key_secret=build.secret("access_key_secret"),
        base_url=str(build.get("base_url", default_url)),
        region=str(build.get("region", "cn-hangzhou")),
        http=build.http,
        clock=build.clock,
    )


def _tencent(build: _Build, defaults: tuple[str, str, str]) -> tencent.TencentClient:
    url, service, version = defaults
    return tencent.TencentClient(
        secret_id=str(build.need("secret_id")),
        secret_key=build.secret("secret_key"),
        base_url=str(build.get("base_url", url)),
        service=str(build.get("service", service)),
        version=str(build.get("version", version)),
        region=str(build.get("region", "ap-guangzhou")),
        http=build.http,
        clock=build.clock,
    )


def _sms(build: _Build) -> ChannelAdapter:
    templates = aliyun.template_refs(build.need("templates"))
    if build.setting.provider == "aliyun":
        client = _aliyun(build, aliyun.SMS_URL)
        return aliyun.AliyunSms(client, str(build.need("sign_name")), templates)
    return tencent.TencentSms(
        _tencent(build, tencent.SMS),
        str(build.need("sdk_app_id")),
        str(build.need("sign_name")),
        templates,
    )


def _voice(build: _Build) -> ChannelAdapter:
    templates = aliyun.template_refs(build.need("templates"))
    play_times = int(build.get("play_times", 2))
    if build.setting.provider == "aliyun":
        client = _aliyun(build, aliyun.VOICE_URL)
        return aliyun.AliyunVoice(client, templates, build.get("called_show_number"), play_times)
    return tencent.TencentVoice(
        _tencent(build, tencent.VOICE), str(build.need("voice_sdk_app_id")), templates, play_times
    )


def _email(build: _Build) -> ChannelAdapter:
    password = build.secret("password") if "password" in build.setting.secret_refs else None
    return SmtpEmail(
        host=str(build.need("host")),
        port=int(build.need("port")),
        sender=str(build.need("sender")),
        username=build.get("username"),
        password=password,
        security=str(build.get("security", "starttls")),
        timeout_s=build.http.timeout_s,
    )


def _token(build: _Build) -> wechat_token.WeChatToken:
    """The app's access token; the official account and the mini program each have their own
    appid and secret, so each channel its own token."""
    return wechat_token.WeChatToken(
        app_id=str(build.need("app_id")),
        app_secret=build.secret("app_secret"),
        channel=build.setting.channel.value,
        base_url=str(build.get("base_url", wechat_token.BASE_URL)),
        http=build.http,
        clock=build.clock,
    )


def _wechat(build: _Build) -> ChannelAdapter:
    return wechat.WeChatTemplate(_token(build), wechat.template_refs(build.need("templates")))


def _wechat_mini(build: _Build) -> ChannelAdapter:
    return wechat_mini.WeChatMiniSubscribe(
        _token(build),
        wechat_mini.template_refs(build.need("templates")),
        wechat_mini.state(str(build.get("miniprogram_state", "formal"))),
    )


def _push(build: _Build) -> ChannelAdapter:
    return HttpPush(str(build.need("url")), build.secret("token"), build.http)


def _webhook(build: _Build) -> ChannelAdapter:
    return Webhook(build.secret("secret"), build.http, build.clock)


def _log(build: _Build) -> ChannelAdapter:
    return LogChannel()


_BUILDERS: dict[Channel, Callable[[_Build], ChannelAdapter]] = {
    Channel.SMS: _sms,
    Channel.VOICE: _voice,
    Channel.EMAIL: _email,
    Channel.WECHAT: _wechat,
    Channel.WECHAT_MINI: _wechat_mini,
    Channel.PUSH: _push,
    Channel.WEBHOOK: _webhook,
    Channel.LOG: _log,
}


@dataclass
class ChannelRegistry:
    """Adapters per (organisation, channel), rebuilt when the settings row changes.
    ``overrides`` replaces the adapter of a channel everywhere (the demo, tests)."""

    secrets: SecretSource = os.environ.get
    http: HttpOptions = field(default_factory=HttpOptions)
    clock: Clock = system_clock
    overrides: dict[Channel, ChannelAdapter] = field(default_factory=dict)
    _cache: dict[tuple[int, Channel], tuple[datetime, ChannelAdapter]] = field(default_factory=dict)

    def adapter(self, setting: ChannelSetting) -> ChannelAdapter:
        if setting.channel in self.overrides:
            return self.overrides[setting.channel]
        key = (setting.organisation_id, setting.channel)
        cached = self._cache.get(key)
        if cached is not None and cached[0] == setting.updated_at:
            return cached[1]
        try:
            built = _BUILDERS[setting.channel](_Build(setting, self.secrets, self.http, self.clock))
        except (KeyError, TypeError, ValueError) as error:
            raise PermanentDeliveryError(f"{setting.channel}: bad settings: {error}") from None
        self._cache[key] = (setting.updated_at, built)
        return built
