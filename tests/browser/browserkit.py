"""What the browser tests and ``screenshots.py`` share, under a name of its own: a module
imported as ``conftest`` would clash with ``tests/web/conftest.py`` when both folders are
collected together."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotations: screenshots.py runs without tests/api on the path
    from apikit import Org

    from meterdesk.db.database import Database

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Site:
    url: str
    db: Database
    alpha: Org
    bravo: Org


def screenshot_dir() -> Path | None:
    """Where to keep screenshots of a run: ``METERDESK_SCREENSHOTS``, if set."""
    found = os.environ.get("METERDESK_SCREENSHOTS")
    return Path(found) if found else None
