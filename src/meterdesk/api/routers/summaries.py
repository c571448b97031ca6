"""Deduction summaries (扣费通知, F-NOTIFY): how often an organisation's tenants hear what a day
or month used and cost. Off by default; changing it is for admins (``settings.write``), like the
quiet hours, and is audited."""

from __future__ import annotations

from fastapi import APIRouter

from meterdesk.api.deps import Caller, Reader, SettingsWriter
from meterdesk.api.errors import ERROR_RESPONSES
from meterdesk.api.idempotency import audited
from meterdesk.api.schemas.notifications import SummariesIn, SummariesOut
from meterdesk.notifications import summary_settings

router = APIRouter(responses=ERROR_RESPONSES, tags=["notifications"])


def _current(caller: Caller) -> SummariesOut:
    found = summary_settings.cadence_of(caller.db, organisation_id=caller.organisation_id)
    return SummariesOut(cadence=found.value)


@router.get("/notification-summaries", response_model=SummariesOut)
def get_summaries(caller: Reader) -> SummariesOut:
    """How often tenants get a deduction summary: ``off``, ``daily`` or ``monthly``."""
    return _current(caller)


@router.put("/notification-summaries", response_model=SummariesOut)
def put_summaries(body: SummariesIn, caller: SettingsWriter) -> SummariesOut:
    """Turn deduction summaries off, or on daily / monthly (each is a message per tenant who
    used anything, on every channel that takes ``deduction_summary``)."""
    summary_settings.set_cadence(
        caller.db, organisation_id=caller.organisation_id, value=body.cadence, actor=caller.actor
    )
    audited(
        caller,
        action="notifications.set_summaries",
        subject="summaries",
        detail={"cadence": body.cadence},
    )
    return _current(caller)
