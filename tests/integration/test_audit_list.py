"""The audit log's list and export with a time bound: every entry once, newest first (the
export oldest first), ordered by time and then id, on SQLite and PostgreSQL.

Ids and times are not strictly in step (a service's entry carries the time of its action, and
concurrent writers commit out of order), so a time-bounded page cannot go on "below the last
id": it goes on after the last entry's own (at, id)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import make_org
from sqlalchemy import select

from meterdesk.api.queries import audit as queries
from meterdesk.api.queries.audit import AuditFilter
from meterdesk.api.queries.common import Window
from meterdesk.audit.tables import audit_log
from meterdesk.db.database import Database
from meterdesk.shared.errors import ValidationError
from meterdesk.shared.time import FakeClock
from support.audit import write_tied_entries

pytestmark = pytest.mark.integration


def newest_first(db: Database, organisation_id: int, where: AuditFilter) -> list[int]:
    """The ids the list should give, worked out here from every entry of the organisation."""
    with db.read() as conn:
        rows = conn.execute(
            select(audit_log.c.id, audit_log.c.at, audit_log.c.action).where(
                audit_log.c.organisation_id == organisation_id
            )
        ).all()
    return [
        row.id
        for row in sorted(rows, key=lambda r: (r.at, r.id), reverse=True)
        if (where.since is None or where.since <= row.at)
        and (where.until is None or row.at < where.until)
        and where.action in (None, row.action)
    ]


def page_through(db: Database, organisation_id: int, where: AuditFilter, size: int) -> list[int]:
    """Every page of the list, each starting from the previous page's cursor."""
    listed: list[int] = []
    cursor: str | None = None
    while True:
        after = None if cursor is None else int(cursor)
        with db.read() as conn:
            rows, cursor = queries.list_entries(conn, organisation_id, where, Window(after, size))
        assert len(rows) == size or cursor is None
        listed += [int(row["id"]) for row in rows]
        if cursor is None:
            return listed


def bounds(start: datetime, since: int | None, until: int | None, **more: Any) -> AuditFilter:
    return AuditFilter(
        since=None if since is None else start + timedelta(minutes=since),
        until=None if until is None else start + timedelta(minutes=until),
        **more,
    )


@pytest.mark.parametrize(
    ("since", "until"),
    [(None, 6), (0, 6), (1, 4), (2, None)],
    ids=["until", "both", "inside", "since"],
)
def test_a_time_bounded_list_pages_through_equal_times_once_each_newest_first(
    db: Database, clock: FakeClock, since: int | None, until: int | None
) -> None:
    """Ids and times out of step, four entries at one instant, another organisation's entry
    beside each: every page goes on after the last entry's (at, id), so each entry comes
    once, newest first, ties by id."""
    ours, theirs = make_org(db, "Org A"), make_org(db, "Org B")
    history = write_tied_entries(db, ours.id, clock(), others=[theirs.id])
    where = bounds(clock(), since, until)
    expected = newest_first(db, ours.id, where)
    tied = {id_ for _, id_ in history}
    assert len(tied & set(expected)) > 4 and expected != sorted(expected, reverse=True)
    for size in (1, 2, 3, 4, 50):
        assert page_through(db, ours.id, where, size) == expected, size
    # An action filter keeps the order; another organisation's entries never show.
    odd = bounds(clock(), since, until, action="tied.odd")
    assert page_through(db, ours.id, odd, 2) == newest_first(db, ours.id, odd)
    assert set(page_through(db, ours.id, odd, 2)) < tied


def test_a_time_bounded_page_starts_only_after_an_entry_of_the_organisation(
    db: Database, clock: FakeClock
) -> None:
    """A time-bounded page goes on after its cursor's own time, so the cursor must name an
    entry of the organisation (another's would tell its time); an unbounded list takes any id
    as a bound below."""
    ours, theirs = make_org(db, "Org A"), make_org(db, "Org B")
    write_tied_entries(db, ours.id, clock(), others=[theirs.id])
    theirs_last = newest_first(db, theirs.id, AuditFilter())[0]
    until = AuditFilter(until=clock() + timedelta(hours=1))
    with db.read() as conn:
        for unknown in (theirs_last, 10**9):
            with pytest.raises(ValidationError, match="cursor"):
                queries.list_entries(conn, ours.id, until, Window(unknown, 2))
        rows, _ = queries.list_entries(conn, ours.id, AuditFilter(), Window(10**9, 500))
    assert [row["id"] for row in rows] == sorted(newest_first(db, ours.id, AuditFilter()))[::-1]


@pytest.mark.parametrize(
    ("since", "until"), [(None, 4), (1, 4), (2, None)], ids=["until", "both", "since"]
)
def test_a_time_bounded_export_is_oldest_first_by_time_then_id(
    db: Database, clock: FakeClock, since: int | None, until: int | None
) -> None:
    """The export of a time range reads it in time order (then id) from its start and stops
    at the limit: the oldest entries of the range, each once."""
    ours, theirs = make_org(db, "Org A"), make_org(db, "Org B")
    write_tied_entries(db, ours.id, clock(), others=[theirs.id])
    where = bounds(clock(), since, until)
    expected = newest_first(db, ours.id, where)[::-1]
    with db.read() as conn:
        exported = [int(row["id"]) for row in queries.export_rows(conn, ours.id, where, 1000)]
        first = [int(row["id"]) for row in queries.export_rows(conn, ours.id, where, 3)]
    assert exported == expected and first == expected[:3]
