"""The deduction summaries card (扣费通知) of the notification settings page: off, daily or
monthly. The change goes through the API's own handler (``put_summaries``): the same role,
validation and audit entries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from meterdesk.api.deps import SettingsWriter
from meterdesk.api.routers.summaries import put_summaries
from meterdesk.api.schemas.notifications import SummariesIn
from meterdesk.web.forms import build
from meterdesk.web.routes.common import page

router = APIRouter(include_in_schema=False)


@router.post("/settings/notifications/summaries", response_class=HTMLResponse)
def save_summaries(
    request: Request,
    caller: SettingsWriter,
    cadence: Annotated[str, Form(max_length=10)],
) -> HTMLResponse:
    found = put_summaries(build(SummariesIn, cadence=cadence), caller)
    return page(
        request, caller, "partials/summaries_card.html", {"summaries": found, "saved": True}
    )
