"""Gateways, buses, live device state, device commands and uplink messages.

A meter reaches the platform over a *bus*: an RS485/M-Bus line behind a gateway or a transparent
DTU, or a TCP endpoint (Modbus TCP). ``meters.bus_id`` and ``meters.address`` say where a meter
answers; ``meters.device_options`` (JSON) holds protocol details such as the Modbus map name or
the CJ/T 188 DI order. Commands are desired states with deadlines, confirmed by read-back; every
step is kept in ``command_events``. MQTT reports are remembered by (gateway, msgid) so a re-sent
report is acknowledged again without being ingested twice.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from meterdesk.db.metadata import metadata
from meterdesk.db.types import Instant, Scaled

gateways = Table(
    "gateways",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("site_id", ForeignKey("sites.id"), nullable=False),
    Column("serial", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("uplink", String(20), nullable=False),  # modbus_tcp | transparent_tcp | mqtt | hj212
    Column("host", String(200), nullable=True),
    Column("port", Integer, nullable=True),
    Column("product_key", String(64), nullable=True),
    # HJ212 gateways: the argon2 hash of the access password (PW) they send in every packet;
    # NULL refuses every packet (docs/hj212.md "Who is talking")
    Column("access_password_hash", String(200), nullable=True),
    Column("state", String(10), nullable=False),  # unknown | online | lost
    Column("last_seen_at", Instant, nullable=True),
    Column("created_at", Instant, nullable=False),
    UniqueConstraint("organisation_id", "serial"),
)

buses = Table(
    "buses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False, index=True),
    Column("gateway_id", ForeignKey("gateways.id"), nullable=True, index=True),
    Column("name", String(100), nullable=False),
    Column("protocol", String(20), nullable=False),  # dlt645 | modbus_rtu | modbus_tcp | cjt188
    Column("transport", String(20), nullable=False),  # tcp | serial | mqtt
    Column("endpoint", String(200), nullable=False),  # host:port, or /dev/ttyUSB0
    Column("baud", Integer, nullable=False),
    Column("parity", String(1), nullable=False),  # N | E | O
    Column("timeout_ms", Integer, nullable=False),
    Column("poll_interval_s", Integer, nullable=False),
    Column("created_at", Instant, nullable=False),
    UniqueConstraint("organisation_id", "name"),
)

# What the platform last saw of each meter: online state, relay/valve, live values, and for
# meter-billing accounts the meter's own remaining money and purchase counter.
device_status = Table(
    "device_status",
    metadata,
    Column("meter_id", ForeignKey("meters.id"), primary_key=True),
    Column("state", String(10), nullable=False),  # unknown | online | lost
    Column("last_seen_at", Instant, nullable=True),
    Column("last_error", String(300), nullable=True),
    Column("failures", Integer, nullable=False),
    Column("relay", String(10), nullable=True),  # closed | open
    Column("valve", String(10), nullable=True),  # open | closed | abnormal
    Column("protected", Integer, nullable=True),
    Column("remaining_money", Scaled(2), nullable=True),
    Column("purchase_count", Integer, nullable=True),
    Column("live", Text, nullable=True),  # JSON: voltage_v, current_a, power_kw, pf, frequency_hz …
    Column("updated_at", Instant, nullable=False),
    # When a read last showed the relay closed (the read's time; the newest such read, kept
    # through reads that show it open): a meter armed with "close allowed" waits for its
    # tenant's button only until the tenant has used it (billing.supply_drift).
    Column("relay_closed_at", Instant, nullable=True),
)

commands = Table(
    "commands",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("organisation_id", ForeignKey("organisations.id"), nullable=False),
    Column("meter_id", ForeignKey("meters.id"), nullable=False),
    Column("kind", String(30), nullable=False),
    Column("params", Text, nullable=False),  # JSON
    Column("status", String(12), nullable=False),  # pending | sent | confirmed | failed | cancelled
    Column("reason", String(300), nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("next_attempt_at", Instant, nullable=False),
    Column("deadline_at", Instant, nullable=False),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("created_by", String(100), nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("sent_at", Instant, nullable=True),
    Column("finished_at", Instant, nullable=True),
    # While an executor works on this command, the end of its lease; NULL once it let go. No
    # other executor claims a command of the same meter meanwhile, whatever this one's status
    # became (a command superseded while its bytes were on the wire still holds the meter until
    # its attempt ends): two executors never act on one meter at once.
    Column("worked_until", Instant, nullable=True),
)

Index("ix_commands_due", commands.c.status, commands.c.next_attempt_at)
Index("ix_commands_meter", commands.c.meter_id, commands.c.id)
# A meter's commands by when they finished: whether one is open (finished_at NULL), when the
# latest finished, and those finished lately — the supply drift step asks every tick about every
# drifting meter, and (meter, id) walked the meter's whole history for it.
Index("ix_commands_meter_finished", commands.c.meter_id, commands.c.finished_at)
# The commands an executor holds: few at any time, read by every claim.
Index(
    "ix_commands_worked",
    commands.c.meter_id,
    commands.c.worked_until,
    sqlite_where=commands.c.worked_until.is_not(None),
    postgresql_where=commands.c.worked_until.is_not(None),
)
# The command list, newest first, of one organisation — all, or of one status: through its own
# index. The primary key walked every newer command of every organisation, and (status, id)
# every newer command of that status (tests/integration/test_history_scaling.py).
Index("ix_commands_org_id", commands.c.organisation_id, commands.c.id)
Index("ix_commands_org_status_id", commands.c.organisation_id, commands.c.status, commands.c.id)

command_events = Table(
    "command_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("command_id", ForeignKey("commands.id"), nullable=False, index=True),
    Column("at", Instant, nullable=False),
    Column("event", String(20), nullable=False),  # created | sent | retry | confirmed | failed | …
    Column("detail", Text, nullable=False),
)

uplink_messages = Table(
    "uplink_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("gateway_serial", String(64), nullable=False),
    Column("msgid", String(100), nullable=False),
    Column("received_at", Instant, nullable=False),
    Column("status", String(10), nullable=False),  # ingested | rejected
    Column("reason", String(300), nullable=True),
    UniqueConstraint("gateway_serial", "msgid"),
)
