"""Who is talking on the HJ212 uplink: gateways by serial (``MN``) and their access password.

The password (``PW``) is kept as an argon2 hash, as users' passwords are: the platform only has
to compare what arrives, and a copy of the database must not hand out the keys to every gateway.
argon2 is slow on purpose, so :class:`Passwords` remembers each (hash, PW) it has checked: a
gateway costs one verification per process (and per password change), not one per packet. How
many *wrong* ones may be checked is limited (:mod:`meterdesk.devices.hj212.limit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, select

from meterdesk.devices.mqtt_rows import KnownGateway
from meterdesk.devices.tables import gateways
from meterdesk.shared.errors import ValidationError
from meterdesk.sites.tables import sites

HJ212 = "hj212"
_REMEMBERED_MAX = 4096
PASSWORD_MAX = 64


@dataclass(frozen=True, slots=True)
class Hj212Gateway:
    known: KnownGateway
    password_hash: str | None  # None: no password set, every packet is refused
    zone: ZoneInfo  # the site's: DataTime is read in it


class Passwords:
    def __init__(self, hasher: PasswordHasher) -> None:
        self.hasher = hasher
        self._checked: dict[tuple[str, str], bool] = {}

    def match(self, stored: str | None, password: str | None) -> bool:
        if stored is None or not password:
            return False
        key = (stored, password)
        if key not in self._checked:
            if len(self._checked) >= _REMEMBERED_MAX:
                self._checked.clear()
            try:
                self._checked[key] = self.hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                self._checked[key] = False
        return self._checked[key]

    def known_right(self, stored: str | None, password: str | None) -> bool:
        """Already verified as right by this process: no verification needed."""
        if stored is None or not password:
            return False
        return self._checked.get((stored, password), False)


def hash_password(password: str, hasher: PasswordHasher | None = None) -> str:
    """The stored form of a gateway's access password; refuses what HJ212 cannot carry."""
    if not password or len(password) > PASSWORD_MAX:
        raise ValidationError(f"access password: give 1 to {PASSWORD_MAX} characters")
    if not password.isascii() or not password.isprintable() or any(c in ";,=&" for c in password):
        raise ValidationError("access password: printable ASCII without ; , = &")
    return (hasher or PasswordHasher()).hash(password)


def load_gateways(conn: Connection, serials: set[str]) -> dict[str, list[Hj212Gateway]]:
    """The gateways with uplink hj212 and these serials, by serial (several: ambiguous)."""
    rows = conn.execute(
        select(
            gateways.c.id,
            gateways.c.organisation_id,
            gateways.c.serial,
            gateways.c.product_key,
            gateways.c.access_password_hash,
            sites.c.timezone,
        )
        .join(sites, sites.c.id == gateways.c.site_id)
        .where(gateways.c.serial.in_(sorted(serials)), gateways.c.uplink == HJ212)
    ).all()
    found: dict[str, list[Hj212Gateway]] = {}
    for gateway_id, org, serial, product_key, password_hash, zone in rows:
        known = KnownGateway(int(gateway_id), int(org), str(serial), product_key)
        found.setdefault(str(serial), []).append(Hj212Gateway(known, password_hash, ZoneInfo(zone)))
    return found
