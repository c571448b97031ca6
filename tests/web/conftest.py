"""Console test fixtures: the API tests' two organisations (``tests/api/apikit.py``: Alpha and
Bravo, a user and a token per role), shared rather than copied."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))

from apikit import alpha, bravo, client, template, world

__all__ = ["alpha", "bravo", "client", "template", "world"]
