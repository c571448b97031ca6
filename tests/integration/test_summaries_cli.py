"""``meterdesk notification summaries set | show | send`` as an operator uses it, on the embedded
SQLite: off by default, turned on, a day's summaries queued by hand (and a repeat queuing
nothing), with ``--json``; bad input exits 2 and changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_cli import ORG, data_dir, instant, open_account, run, run_json, set_up_places

from meterdesk.cli import common as cli_common
from meterdesk.shared.time import FakeClock

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]

OPENED = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai


def test_summaries_are_set_shown_and_sent_from_the_shell(data_dir: Path, tmp_path: Path) -> None:
    clock = FakeClock(OPENED)
    cli_common.app().db.clock = clock  # the CLI's own clock, moved by hand
    open_account(set_up_places(tmp_path))
    run("notification", "channel", "set", "log", *ORG, "--provider", "log")
    readings = tmp_path / "readings.csv"
    readings.write_text(
        "meter_number,measured_at,total\n"
        f"M1,{instant(OPENED + timedelta(hours=4))},1010\n"  # 12:00 local: 10 kWh
        f"M1,{instant(OPENED + timedelta(hours=16, minutes=5))},1012\n",  # 00:05 on the 3rd
        encoding="utf-8",
    )
    clock.now = OPENED + timedelta(hours=17)
    run("readings", "import", str(readings), *ORG)

    assert run_json("notification", "summaries", "show", *ORG) == {"cadence": "off"}
    assert "off" in run("notification", "summaries", "send", *ORG, code=2).output
    assert "summaries: off" in run("notification", "summaries", "show", *ORG).stdout

    run("notification", "summaries", "set", *ORG, "--cadence", "weekly", code=2)
    assert run_json("notification", "summaries", "show", *ORG) == {"cadence": "off"}
    shown = run("notification", "summaries", "set", *ORG, "--cadence", "daily").stdout
    assert "daily" in shown
    assert run_json("notification", "summaries", "show", *ORG) == {"cadence": "daily"}

    sent = run_json("notification", "summaries", "send", *ORG)
    assert (sent["queued"], sent["already"], sent["skipped"]) == (1, 0, 0)
    assert sent["periods"] == [
        {"organisation_id": sent["periods"][0]["organisation_id"], "zone": "Asia/Shanghai",
         "period": "2026-11-02"}
    ]  # fmt: skip
    again = run("notification", "summaries", "send", *ORG, "--period", "2026-11-02").stdout
    assert "2026-11-02 (Asia/Shanghai): 0 queued, 1 already queued, 0 skipped" in again
    run("notification", "summaries", "send", *ORG, "--period", "2026-11-03", code=2)  # not over
    run("notification", "summaries", "send", *ORG, "--period", "November", code=2)

    (message,) = run_json("notification", "log", *ORG, "--event", "deduction_summary")
    assert message["params"]["electricity_quantity"] == "10.00"
    assert message["params"]["period"] == "2026-11-02"
