"""Idempotent API calls and the API's audit entries (who, what, from which address).

A money-moving call carries an ``Idempotency-Key``. The service gets the key, so money moves at
most once whatever happens; this module also stores the first answer under (organisation, key)
so a retry gets the very same body — with status 200 and ``Idempotent-Replay: true`` — and the
same key on a different request (another route or body) is a 409. Errors are not stored: a
refused request changed nothing and may be sent again, corrected, with the same key.

The stored answer and the API's audit entry (action ``api.…`` with the client address as
``source``) are written in one transaction after the service's own, which already recorded the
action itself; see docs/api.md for why this is a second entry and what would make it one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from meterdesk.access.tables import idempotent_responses
from meterdesk.api.deps import Caller
from meterdesk.audit import service as audit
from meterdesk.shared.errors import IdempotencyConflictError

REPLAY_HEADER = "Idempotent-Replay"


def fingerprint(request: Request, payload: Any) -> str:
    """What makes two requests "the same": method, route and the parsed body or parameters."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    described = {
        "method": request.method,
        "route": path,
        "path": request.url.path,
        "payload": payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def _stored(conn: Connection, organisation_id: int, key: str) -> Any:
    return (
        conn.execute(
            select(idempotent_responses).where(
                idempotent_responses.c.organisation_id == organisation_id,
                idempotent_responses.c.key == key,
            )
        )
        .mappings()
        .first()
    )


def _replay(row: Any, request_hash: str, key: str) -> JSONResponse:
    if row["request_hash"] != request_hash:
        raise IdempotencyConflictError(
            f"idempotency key {key!r} was already used for a different request"
        )
    return JSONResponse(json.loads(row["body"]), status_code=200, headers={REPLAY_HEADER: "true"})


def run_once(
    caller: Caller,
    request: Request,
    *,
    key: str,
    payload: Any,
    action: str,
    subject: str,
    perform: Callable[[], tuple[BaseModel, bool]],
    status_code: int = 201,
) -> JSONResponse:
    """Answer a stored replay, or run ``perform`` (which returns the body and whether the
    service itself recognised a replay), store its answer and audit it."""
    request_hash = fingerprint(request, payload)
    with caller.db.read() as conn:
        row = _stored(conn, caller.organisation_id, key)
    if row is not None:
        return _replay(row, request_hash, key)
    result, replayed_by_service = perform()
    body = result.model_dump(mode="json")
    try:
        with caller.db.transaction() as conn:
            conn.execute(
                insert(idempotent_responses).values(
                    organisation_id=caller.organisation_id,
                    key=key,
                    request_hash=request_hash,
                    status_code=status_code,
                    body=json.dumps(body, ensure_ascii=False),
                    created_at=caller.db.clock(),
                )
            )
            if not replayed_by_service:
                detail = {"idempotency_key": key, "result": _summary(body)}
                _audit(conn, caller, action, subject, detail)
    except IntegrityError:
        # A concurrent twin stored its answer first: answer what it answered.
        with caller.db.read() as conn:
            return _replay(_stored(conn, caller.organisation_id, key), request_hash, key)
    if replayed_by_service:
        return JSONResponse(body, status_code=200, headers={REPLAY_HEADER: "true"})
    return JSONResponse(body, status_code=status_code)


def _summary(body: dict[str, Any]) -> dict[str, Any]:
    """The answer as audited: whole when small, without its lists when large (an import)."""
    if len(json.dumps(body, default=str)) <= 2000:
        return body
    return {name: value for name, value in body.items() if not isinstance(value, list)}


def _audit(
    conn: Connection, caller: Caller, action: str, subject: str, detail: dict[str, Any]
) -> None:
    audit.record(
        conn,
        organisation_id=caller.organisation_id,
        actor=caller.actor,
        action=f"api.{action}",
        subject=subject,
        at=caller.db.clock(),
        detail=detail,
        source=caller.address[:100],
    )


def audited(
    caller: Caller, *, action: str, subject: str, detail: dict[str, Any] | None = None
) -> None:
    """Record an API action (after the service committed it) with the caller's address."""
    with caller.db.transaction() as conn:
        _audit(conn, caller, action, subject, detail or {})
