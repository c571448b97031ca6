"""``meterdesk bench control`` end to end at a small scale (4 accounts on one simulated line, a
light background load for 8 s) against the real Mosquitto: every account is cut and restored,
every latency is measured, every check holds, and the last line is the JSON summary. Timings
are printed, never asserted."""

from __future__ import annotations

import json
import math
import socket

import pytest

from meterdesk.bench.control import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_control_measures_every_trip_and_restore_and_its_checks_hold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=2).close()
    except OSError as error:
        pytest.skip(f"Mosquitto does not answer on 127.0.0.1:1883 ({error})")
    summary = run(
        quick=True, database_url=None, broker="127.0.0.1:1883", rate=300, meters=4, seed=2,
        publishers=1, seconds=8,
    )  # fmt: skip

    assert summary["checks"] and all(summary["checks"].values()), summary["checks"]
    assert summary["invariants_ok"] is True
    assert (summary["trips"], summary["restores"], summary["not_measured"]) == (4, 4, [])
    for key in ("trip_p99_s", "restore_p99_s", "background_readings_per_s"):
        assert isinstance(summary[key], int | float) and not math.isnan(summary[key])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == json.loads(json.dumps(summary, sort_keys=True))
