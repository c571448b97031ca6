"""The one place that builds the running application: settings → engine → database handle.

Nothing here runs at import; :func:`build` is called by the CLI (and tests) when needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from meterdesk.billing.ingest import Ingestor
from meterdesk.db.database import Database
from meterdesk.db.engine import build_engine
from meterdesk.settings import Settings
from meterdesk.shared.time import Clock, system_clock


@dataclass
class App:
    settings: Settings
    db: Database
    ingestor: Ingestor


def build(
    settings: Settings | None = None, *, clock: Clock = system_clock, echo: bool = False
) -> App:
    resolved = settings or Settings()
    engine = build_engine(resolved.resolved_database_url(), echo=echo)
    db = Database(engine=engine, clock=clock)
    return App(settings=resolved, db=db, ingestor=Ingestor(db))
