"""``bench ingest`` reports the bytes the ingest writes per reading, a figure a loaded machine
does not move; it must count what the process writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from meterdesk.bench.ingest import written_bytes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/io is Linux's")
def test_written_bytes_grow_by_what_the_process_writes(tmp_path: Path) -> None:
    before = written_bytes()
    assert before is not None
    (tmp_path / "f").write_bytes(b"x" * 100_000)
    after = written_bytes()
    assert after is not None
    assert 100_000 <= after - before < 200_000
