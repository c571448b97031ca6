"""Browser tests: the real server (uvicorn on a free loopback port) over a small seeded database
(the API tests' Alpha and Bravo), driven by Playwright with Debian's Chromium.

Playwright's own browser download is never used (the machines have no internet): tests launch
``/usr/bin/chromium`` and are skipped, saying why, when it or the playwright package is missing
(``apt-get install chromium``; ``pip install -e .[dev]``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))

from apikit import API_CONFIG, T0, build_org, sqlite_engine
from browserkit import CHROMIUM, CHROMIUM_ARGS, Site, free_port

from meterdesk.api.serve import server as make_server
from meterdesk.billing.ingest import Ingestor
from meterdesk.bootstrap import App
from meterdesk.db.database import Database
from meterdesk.settings import Settings
from meterdesk.shared.time import FakeClock, system_clock


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is not installed (pip install -e .[dev])"
    for item in items:
        if "browser" in item.keywords and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    engine = sqlite_engine(tmp_path)
    seeding = Database(engine=engine, clock=FakeClock(T0))  # as the API tests build it
    alpha = build_org(seeding, "Alpha")
    bravo = build_org(seeding, "Bravo")
    db = Database(engine=engine, clock=system_clock)
    app = App(settings=Settings(data_dir=tmp_path), db=db, ingestor=Ingestor(db))
    port = free_port()
    server = make_server(app, port=port, config=API_CONFIG, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    yield Site(f"http://127.0.0.1:{port}", db, alpha, bravo)
    server.should_exit = True
    thread.join(timeout=10)
    engine.dispose()


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


__all__ = ["browser", "site"]
