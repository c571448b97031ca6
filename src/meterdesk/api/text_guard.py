"""One check before every route: no string a request carries — JSON body, form field, query or
path parameter, Idempotency-Key — holds a control character (``meterdesk.shared.text``). Done
once here rather than on each of the many text fields of the request models, so a new field
cannot forget it; the console's forms pass through it too."""

from __future__ import annotations

import json

from fastapi import Request
from starlette.datastructures import UploadFile

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.text import first_control_character


async def refuse_control_characters(request: Request) -> None:
    query = request.query_params.multi_items()
    problem = (
        first_control_character(dict(request.path_params), "")
        or next(filter(None, (first_control_character(v, k) for k, v in query)), None)
        or first_control_character(request.headers.get("idempotency-key", ""), "Idempotency-Key")
        or await _in_body(request)
    )
    if problem:
        raise ValidationError(problem)


async def _in_body(request: Request) -> str | None:
    kind = request.headers.get("content-type", "").lower()
    if kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # already read and kept by FastAPI for the route
        fields = {
            name: value for name, value in form.multi_items() if not isinstance(value, UploadFile)
        }
        return first_control_character(fields, "")
    # Any other body that is JSON, whatever its content type says: FastAPI reads JSON from
    # "application/json", "APPLICATION/JSON" or "application/merge-patch+json" alike.
    body = await request.body()
    if not body:
        return None
    try:
        return first_control_character(json.loads(body), "")
    except (ValueError, RecursionError):  # not JSON: FastAPI answers that itself
        return None
