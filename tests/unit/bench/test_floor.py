"""`bench floor` is a measuring stick: it must do the work it claims, or its figures mean nothing."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from meterdesk.bench import floor
from meterdesk.bench.workload import build
from meterdesk.cli import cli


def test_the_lean_loop_bills_as_the_reference_and_stores_each_reading_once() -> None:
    # Two batches: the second brings repeats of readings the first stored, and late readings.
    summary = floor.run(meters=300, rounds=8, seed=3)
    distinct = len(build(seed=3, meters=300, rounds=8).truth)
    assert summary["readings"] == distinct
    for design in floor.DESIGNS:
        result = summary[design]
        assert result["bills_differ_without_late_reading"] == 0
        assert result["stored_readings"] == distinct  # repeats dropped, late ones kept
        assert result["balances_conserved"] is True
        assert result["readings_per_s"] > 0


def test_a_wrong_price_shows_in_the_bills(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real = floor._Tariff.cost
    monkeypatch.setattr(
        floor._Tariff,
        "cost",
        lambda self, hour, used, quantity: real(self, hour, used, quantity) + floor.EXACT_PER_FEN,
    )
    summary = floor.run(meters=40, rounds=4, seed=3)
    assert all(summary[d]["bills_differ_without_late_reading"] > 0 for d in floor.DESIGNS)


def test_the_cli_prints_the_figures_and_a_json_line() -> None:
    result = CliRunner().invoke(cli, ["bench", "floor", "--meters", "30", "--rounds", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["bench"] == "floor"
    assert set(floor.DESIGNS) | {"bulk"} <= summary.keys()
