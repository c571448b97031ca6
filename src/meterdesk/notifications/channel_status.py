"""The organisation's notification channels as operators see them: every channel (configured or
not), its provider and non-secret settings, which secrets it reads and whether the environment
variable holding each is set, and whether an adapter can be built from it at all.

Secret *values* never appear here (they are not in the database either): a secret shows as the
name of its environment variable and ``set`` / ``missing`` in the environment of the process
that asks. The dispatcher (``meterdesk run``) reads its own environment, which may differ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from meterdesk.db.database import Database
from meterdesk.notifications.channels.base import DeliveryError, SecretSource
from meterdesk.notifications.channels.registry import ChannelRegistry
from meterdesk.notifications.configuration import (
    PROVIDERS,
    SECRET_NAMES,
    ChannelSetting,
    channel_settings,
    operator_address_warnings,
    quiet_hours_of,
)
from meterdesk.notifications.model import Channel


@dataclass(frozen=True)
class SecretView:
    name: str  # what the adapter calls it, e.g. access_key_secret
    variable: str | None  # the environment variable named in secret_refs
    set: bool  # that variable holds a value in this process's environment


@dataclass(frozen=True)
class ChannelView:
    channel: str
    configured: bool
    provider: str | None
    providers: tuple[str, ...]
    enabled: bool
    events: list[str] | None  # None: every event
    config: Mapping[str, Any]
    secrets: list[SecretView]
    updated_at: datetime | None
    problem: str | None  # why no adapter can be built from these settings, if so
    # SMS: an operator address that is a landline (accepted; no SMS reaches it), one line each
    address_warnings: list[str] = field(default_factory=list)


def _secrets(provider: str, refs: Mapping[str, str], source: SecretSource) -> list[SecretView]:
    names = sorted({*SECRET_NAMES.get(provider, ()), *refs})
    return [
        SecretView(name, refs.get(name), bool(refs.get(name) and source(refs[name])))
        for name in names
    ]


def _problem(setting: ChannelSetting, source: SecretSource) -> str | None:
    try:
        ChannelRegistry(secrets=source).adapter(setting)
    except DeliveryError as error:
        return str(error)
    return None


def _view(channel: Channel, setting: ChannelSetting | None, source: SecretSource) -> ChannelView:
    if setting is None:
        return ChannelView(
            channel.value, False, None, PROVIDERS[channel], False, None, {}, [], None, None
        )
    return ChannelView(
        channel=channel.value,
        configured=True,
        provider=setting.provider,
        providers=PROVIDERS[channel],
        enabled=setting.enabled,
        events=None if setting.events is None else sorted(e.value for e in setting.events),
        config=dict(setting.config),
        secrets=_secrets(setting.provider, setting.secret_refs, source),
        updated_at=setting.updated_at,
        problem=_problem(setting, source),
        address_warnings=operator_address_warnings(channel, setting.config),
    )


def channel_views(
    db: Database, *, organisation_id: int, secrets: SecretSource = os.environ.get
) -> list[ChannelView]:
    """Every channel in a fixed order, configured or not."""
    with db.read() as conn:
        found = {s.channel: s for s in channel_settings(conn, organisation_id)}
    return [_view(channel, found.get(channel), secrets) for channel in Channel]


def channel_view(
    db: Database, *, organisation_id: int, channel: Channel, secrets: SecretSource = os.environ.get
) -> ChannelView:
    return next(
        view
        for view in channel_views(db, organisation_id=organisation_id, secrets=secrets)
        if view.channel == channel.value
    )


def quiet_hours(db: Database, *, organisation_id: int) -> tuple[str, str] | None:
    """The organisation's daily quiet window as ("22:00", "07:00"), or None."""
    with db.read() as conn:
        found = quiet_hours_of(conn, [organisation_id]).get(organisation_id)
    if found is None:
        return None
    return found.start.strftime("%H:%M"), found.end.strftime("%H:%M")
