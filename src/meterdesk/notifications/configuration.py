"""Per-organisation notification settings: channels (enabled, provider, settings, subscribed
events, secret references) and quiet hours.

Secrets never enter the database: ``secret_refs`` maps a secret's name to the *environment
variable* that holds it (``{"access_key_secret": "METERDESK_ALIYUN_SECRET"}``), and
:func:`configure_channel` refuses settings whose names say they are secrets. The dispatcher
reads the variables when it builds an adapter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from meterdesk.audit import service as audit
from meterdesk.db.database import Database
from meterdesk.notifications import model
from meterdesk.notifications.model import Channel, EventKind, QuietHours
from meterdesk.notifications.tables import notification_channel_settings, notification_quiet_hours
from meterdesk.shared.contacts import is_landline, normalise_email, normalise_phone, sms_warning
from meterdesk.shared.errors import ValidationError

PROVIDERS: dict[Channel, tuple[str, ...]] = {
    Channel.SMS: ("aliyun", "tencent"),
    Channel.VOICE: ("aliyun", "tencent"),
    Channel.EMAIL: ("smtp",),
    Channel.WECHAT: ("wechat",),
    Channel.WECHAT_MINI: ("wechat_mini",),
    Channel.PUSH: ("http",),
    Channel.WEBHOOK: ("webhook",),
    Channel.LOG: ("log",),
}
SECRET_WORDS = ("secret", "password", "token", "passwd", "private")
#: The secrets each provider's adapter reads through ``secret_refs`` (SMTP's password is optional).
SECRET_NAMES: dict[str, tuple[str, ...]] = {
    "aliyun": ("access_key_secret",),
    "tencent": ("secret_key",),
    "smtp": ("password",),
    "wechat": ("app_secret",),
    "wechat_mini": ("app_secret",),
    "http": ("token",),
    "webhook": ("secret",),
    "log": (),
}


@dataclass(frozen=True)
class ChannelSetting:
    organisation_id: int
    channel: Channel
    provider: str
    enabled: bool
    events: frozenset[EventKind] | None  # None: every event
    config: Mapping[str, Any]
    secret_refs: Mapping[str, str]
    updated_at: datetime

    def subscribed(self, kind: EventKind) -> bool:
        return self.events is None or kind in self.events


def _setting(row: Mapping[str, Any]) -> ChannelSetting:
    events = None if row["events"] is None else json.loads(row["events"])
    return ChannelSetting(
        organisation_id=int(row["organisation_id"]),
        channel=Channel(row["channel"]),
        provider=str(row["provider"]),
        enabled=bool(row["enabled"]),
        events=None if events is None else frozenset(EventKind(e) for e in events),
        config=json.loads(row["config"]),
        secret_refs=json.loads(row["secret_refs"]),
        updated_at=row["updated_at"],
    )


# Built once: every ingest batch that decides reads it, and building a statement (and its cache
# key) cost more than running it.
_SETTINGS = (
    select(notification_channel_settings)
    .where(notification_channel_settings.c.organisation_id == bindparam("organisation_id"))
    .order_by(notification_channel_settings.c.channel)
)


def channel_settings(conn: Connection, organisation_id: int) -> list[ChannelSetting]:
    rows = conn.execute(_SETTINGS, {"organisation_id": organisation_id}).mappings()
    return [_setting(dict(row)) for row in rows]


def channel_setting(
    conn: Connection, organisation_id: int, channel: Channel
) -> ChannelSetting | None:
    row = (
        conn.execute(
            select(notification_channel_settings).where(
                notification_channel_settings.c.organisation_id == organisation_id,
                notification_channel_settings.c.channel == channel.value,
            )
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else _setting(dict(row))


def _check(
    channel: Channel, provider: str, config: Mapping[str, Any], secret_refs: Mapping[str, str]
) -> None:
    if provider not in PROVIDERS[channel]:
        choices = ", ".join(PROVIDERS[channel])
        raise ValidationError(f"{channel}: unknown provider {provider!r} (use {choices})")
    for name in config:
        # Key *ids* (access_key_id, secret_id, app_id) name a key and are not secret.
        if not name.endswith("_id") and any(word in name.lower() for word in SECRET_WORDS):
            raise ValidationError(
                f"{channel}: {name!r} looks like a secret; put it in an environment variable "
                f"and name that variable in secret_refs"
            )
    for name, variable in secret_refs.items():
        if not variable.replace("_", "").isalnum() or not variable.upper() == variable:
            raise ValidationError(
                f"{channel}: secret_refs[{name!r}] must name an environment variable "
                f"(UPPER_CASE), not hold the secret itself"
            )


def _with_operator_addresses(channel: Channel, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its ``operator_addresses`` stored as they will be sent to: phones as
    E.164 on SMS and voice, e-mails normalised; a bad one is refused with its position, since
    the first the operators would hear of it is an alarm that never reached them."""
    found = config.get("operator_addresses")
    if found is None:
        return config
    if not isinstance(found, list):
        raise ValidationError(f"{channel}: operator_addresses must be a list of addresses")
    normalise = _OPERATOR_ADDRESS.get(channel)
    if normalise is None:
        return config
    addresses = [
        normalise(str(item), f"operator_addresses[{index}]")
        for index, item in enumerate(found)
        if str(item).strip()
    ]
    return {**config, "operator_addresses": addresses}


def operator_landlines(channel: Channel, config: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(position, number) of the landlines among an SMS channel's ``operator_addresses``, as
    stored: a landline is a valid number, accepted as a customer's is, but every SMS to it fails
    (``channels/base.py`` ``sms_number``), so whoever saves one is told. Only on SMS: the voice
    channel calls landlines, and e-mail addresses are not phones."""
    found = config.get("operator_addresses")
    if channel is not Channel.SMS or not isinstance(found, list):
        return []
    return [(index, str(item)) for index, item in enumerate(found) if is_landline(str(item))]


def operator_address_warnings(channel: Channel, config: Mapping[str, Any]) -> list[str]:
    """What to tell whoever saves ``config`` (:func:`operator_landlines`), one line a landline,
    in the words customers' phones get (``contacts.sms_warning``)."""
    return [
        warning
        for index, number in operator_landlines(channel, config)
        if (warning := sms_warning(number, field=f"operator_addresses[{index}]"))
    ]


_OPERATOR_ADDRESS: dict[Channel, Callable[[str, str], str]] = {
    Channel.SMS: lambda value, field: normalise_phone(value, field=field),
    Channel.VOICE: lambda value, field: normalise_phone(value, field=field),
    Channel.EMAIL: lambda value, field: normalise_email(value, field=field),
}


def _subscribable(event: str) -> EventKind:
    kind = model.event_kind(event)
    if kind not in model.SUBSCRIBABLE_EVENTS:
        raise ValidationError(f"{event}: not an event a channel subscribes to")
    return kind


def configure_channel(
    db: Database,
    *,
    organisation_id: int,
    channel: str,
    provider: str,
    enabled: bool = True,
    config: Mapping[str, Any] | None = None,
    secret_refs: Mapping[str, str] | None = None,
    events: Sequence[str] | None = None,
    actor: str,
) -> None:
    """Create or replace an organisation's settings for one channel."""
    which = model.channel(channel)
    settings, refs = dict(config or {}), dict(secret_refs or {})
    _check(which, provider, settings, refs)
    settings = _with_operator_addresses(which, settings)
    kinds = None if events is None else sorted({_subscribable(e).value for e in events})
    values = {
        "provider": provider,
        "enabled": enabled,
        "events": None if kinds is None else json.dumps(kinds),
        "config": json.dumps(settings, ensure_ascii=False, sort_keys=True),
        "secret_refs": json.dumps(refs, sort_keys=True),
        "updated_at": db.clock(),
        "updated_by": actor,
    }
    table = notification_channel_settings
    with db.transaction() as conn:
        changed = conn.execute(
            update(table)
            .where(table.c.organisation_id == organisation_id, table.c.channel == which.value)
            .values(**values)
        ).rowcount
        if not changed:
            conn.execute(
                insert(table).values(organisation_id=organisation_id, channel=which.value, **values)
            )
        detail = {"provider": provider, "enabled": enabled, "events": kinds, "config": settings}
        _audit(conn, db, organisation_id, actor, which, {**detail, "secret_refs": sorted(refs)})


def _audit(
    conn: Connection,
    db: Database,
    organisation_id: int,
    actor: str,
    channel: Channel,
    detail: dict[str, Any],
) -> None:
    audit.record(
        conn,
        organisation_id=organisation_id,
        actor=actor,
        action="notifications.configure_channel",
        subject=f"channel:{channel.value}",
        at=db.clock(),
        detail=detail,
    )


def set_quiet_hours(
    db: Database, *, organisation_id: int, start: str | None, end: str | None, actor: str
) -> None:
    """Set the daily quiet window (local wall time, e.g. 22:00–07:00); ``None`` clears it."""
    table = notification_quiet_hours
    with db.transaction() as conn:
        conn.execute(delete(table).where(table.c.organisation_id == organisation_id))
        if start is not None or end is not None:
            window = model.quiet_hours(start or "", end or "")
            conn.execute(
                insert(table).values(
                    organisation_id=organisation_id,
                    start_local=window.start.strftime("%H:%M"),
                    end_local=window.end.strftime("%H:%M"),
                    updated_at=db.clock(),
                    updated_by=actor,
                )
            )
        audit.record(
            conn,
            organisation_id=organisation_id,
            actor=actor,
            action="notifications.set_quiet_hours",
            subject="quiet_hours",
            at=db.clock(),
            detail={"start": start, "end": end},
        )


def quiet_hours_of(conn: Connection, organisation_ids: Iterable[int]) -> dict[int, QuietHours]:
    table = notification_quiet_hours
    rows = conn.execute(
        select(table.c.organisation_id, table.c.start_local, table.c.end_local).where(
            table.c.organisation_id.in_(sorted(set(organisation_ids)))
        )
    ).all()
    return {int(org): model.quiet_hours(start, end) for org, start, end in rows}
