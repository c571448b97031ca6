"""Times at the edge of what a datetime can hold (year 1 with a positive offset, year 9999 with a
negative one) are refused with a clear 422, never a 500: schemathesis found
``/accounts/{id}/statement?end=0001-01-01T00:00:00+00:01`` answering 500 (OverflowError)."""

from __future__ import annotations

import pytest
from apikit import Org, error_code
from fastapi.testclient import TestClient

EDGES = ("0001-01-01T00:00:00+00:01", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-00:01")


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize(
    ("path", "names"),
    [
        ("/api/v1/accounts/{account_id}/statement", ("start", "end")),
        ("/api/v1/meters/{meter_id}/readings", ("start", "end")),
        ("/api/v1/audit", ("since", "until")),
        ("/api/v1/audit/export", ("since", "until")),
        ("/api/v1/notifications", ("since", "until")),
    ],
)
def test_edge_times_are_refused_or_answered_never_a_server_error(
    client: TestClient, alpha: Org, path: str, names: tuple[str, str], edge: str
) -> None:
    for name in names:
        answer = client.get(path.format(**alpha.ids()), params={name: edge}, headers=alpha.auth())
        assert answer.status_code in (200, 422), (name, answer.status_code, answer.text[:300])
        if answer.status_code == 422:
            assert error_code(answer) == "validation_error", answer.text
