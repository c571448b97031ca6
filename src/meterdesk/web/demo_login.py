"""The demo's login: an admin of the demo organisation with a fresh random password, printed by
``meterdesk demo`` so a newcomer can open the console at once."""

from __future__ import annotations

import secrets

from meterdesk.access import service
from meterdesk.db.database import Database
from meterdesk.shared.errors import NotFoundError

DEMO_USERNAME = "demo-admin"


def ensure_demo_login(db: Database, organisation_id: int) -> tuple[str, str]:
    """(username, password) of an admin of the organisation: created the first time, given a
    new password on later runs (only its hash is stored, so it cannot be shown again)."""
    password = secrets.token_urlsafe(12)
    try:
        user_id = service.user_id_by_username(db, username=DEMO_USERNAME)
    except NotFoundError:
        service.create_member(
            db,
            organisation_id=organisation_id,
            user=service.NewUser(
                username=DEMO_USERNAME, display_name="Demo admin", password=password
            ),
            role="admin",
            actor="demo:setup",
        )
        return DEMO_USERNAME, password
    if organisation_id not in {
        m.organisation_id for m in service.identity(db, user_id=user_id).memberships
    }:
        service.add_member(
            db, organisation_id=organisation_id, user_id=user_id, role="admin", actor="demo:setup"
        )
    service.set_password(db, user_id=user_id, password=password)
    return DEMO_USERNAME, password
