"""``meterdesk customer update --no-summaries`` / ``--summaries``: a tenant's choice of no
deduction summaries (扣费通知) set and cleared at the command line, shown in ``--json``."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from test_cli import ORG, data_dir, run, run_json, set_up_places

from meterdesk.cli import common as cli_common
from meterdesk.sites.tables import customers

pytestmark = pytest.mark.integration
__all__ = ["data_dir"]


def opted_out(customer_id: int) -> bool:
    with cli_common.app().db.read() as conn:
        return bool(
            conn.execute(
                select(customers.c.summaries_opt_out).where(customers.c.id == customer_id)
            ).scalar_one()
        )


def test_the_cli_sets_and_clears_a_customers_no_summaries_choice(
    data_dir: Path, tmp_path: Path
) -> None:
    customer = set_up_places(tmp_path)
    assert opted_out(customer) is False  # everyone gets them unless they ask

    off = run_json("customer", "update", str(customer), *ORG, "--no-summaries")
    assert off["changed"] == ["summaries_opt_out"] and opted_out(customer) is True
    (listed,) = run_json("customer", "list", *ORG)
    assert listed["summaries_opt_out"] is True
    (_, line) = run("customer", "list", *ORG).stdout.splitlines()
    assert line.split()[-3:] == ["+8613900000000", "no", "-"]  # summaries: no; no e-mail

    run_json("customer", "update", str(customer), *ORG, "--summaries")
    assert opted_out(customer) is False
