"""The end of a demo run: what happened, and what to try next with the CLI."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from meterdesk.demo.plan import COMMERCIAL
from meterdesk.demo.queries import AccountState, LedgerCheck, QuantityHeld
from meterdesk.demo.simulation import Tally
from meterdesk.shared.money import from_fen

STATEMENT_DEFAULT_DAYS = 30  # ``meterdesk account statement`` looks this far back by default


@dataclass(frozen=True)
class Outcome:
    organisation: str
    started: datetime
    ended: datetime
    tally: Tally
    states: dict[str, AccountState]
    ledger: LedgerCheck
    quantity: list[QuantityHeld] = field(default_factory=list)  # quantity credit (购量)


def summary_lines(outcome: Outcome) -> list[str]:
    tally, states = outcome.tally, outcome.states
    owing = [s for s in states.values() if s.arrears_fen > 0]
    simulated = outcome.ended - outcome.started
    hours = simulated.total_seconds() / 3600
    ledger = outcome.ledger
    return [
        f"Summary — {hours:g} simulated hours"
        + (" (stopped early with Ctrl-C)" if tally.interrupted else ""),
        f"  readings polled           {tally.delivered:>10,}   accepted {tally.accepted:,}",
        *_when(tally.duplicates, "duplicates ignored", "(re-sent readings: never billed twice)"),
        *_when(tally.late, "late readings re-priced", "(arrived after a newer one)"),
        *_when(
            tally.quarantined,
            "quarantined, not billed",
            "(implausible readings wait for an operator)",
        ),
        f"  supply cut / restored     {tally.cuts:>10,}   / {tally.restores:,} — each confirmed by "
        "reading the meter back"
        + (f"; {tally.commands_failed} commands failed" if tally.commands_failed else ""),
        f"  messages sent             {tally.messages:>10,}   (alarms, cuts, restores, recharges)",
        f"  money deducted            {from_fen(tally.deducted_fen):>10,}   CNY"
        + (
            f", {from_fen(tally.returned_fen)} given back by re-pricing"
            if tally.returned_fen
            else ""
        ),
        f"  recharges at the desk     {tally.recharges:>10,}   {from_fen(tally.recharged_fen):,} CNY",
        *_quantity_line(outcome.quantity),
        f"  accounts in arrears       {len(owing):>10,}   owing "
        f"{from_fen(sum(s.arrears_fen for s in owing)):,} CNY",
        f"  ledger                    {ledger.transfers:>10,}   transfers; balances sum to "
        f"{from_fen(ledger.sum_of_balances_fen)}"
        + (" ✓" if ledger.ok else f" — {ledger.mismatched_accounts} accounts do NOT match!"),
    ]


def _quantity_line(held: list[QuantityHeld]) -> list[str]:
    """Quantity credit: how much was bought, the valves it closed and opened, and whether each
    account's money still matches its lots."""
    if not held:
        return []
    units = sorted({h.unit for h in held})
    bought = ", ".join(f"{sum(h.bought for h in held if h.unit == u):,.2f} {u}" for u in units)
    mismatched = sum(not h.matches for h in held)
    return [
        f"  quantity credit (购量)   {len(held):>10,}   accounts; {bought} bought; "
        f"valves closed {sum(h.cuts for h in held)} / reopened {sum(h.restores for h in held)}; "
        + ("money matches the lots ✓" if not mismatched else f"{mismatched} do NOT match the lots!")
    ]


def _when(count: int, what: str, why: str) -> list[str]:
    """A summary line only for what happened at all."""
    return [f"  {what:<25} {count:>10,}   {why}"] if count else []


def _pick(outcome: Outcome) -> tuple[str, str]:
    """An account worth a statement (went short, then recharged) and one still owing money."""
    states = outcome.states
    lowest = sorted(states.values(), key=lambda s: (s.balance_fen - s.arrears_fen, s.number))
    recharged = outcome.tally.recharged_accounts
    owing = [s.number for s in lowest if s.arrears_fen > 0]
    statement = recharged[0] if recharged else lowest[0].number
    balance = owing[0] if owing else lowest[0].number
    return statement, balance


def program() -> str:
    """How to call meterdesk from here: ``meterdesk`` when it is on the PATH, else the path of
    the one running (``.venv/bin/meterdesk`` right after ``make demo``)."""
    if shutil.which("meterdesk"):
        return "meterdesk"
    script = Path(sys.executable).parent / "meterdesk"
    if not script.exists():
        return "meterdesk"
    try:
        relative = os.path.relpath(script)
    except ValueError:  # another drive on Windows
        return str(script)
    return str(script) if relative.startswith("..") else relative


def suggestions(outcome: Outcome, *, where: str, log: Path | None = None) -> list[str]:
    """``where`` says how the CLI finds the same database (a directory to run from, or an
    environment variable to keep set)."""
    org, md = f'--org "{outcome.organisation}"', program()
    statement, owing = _pick(outcome)
    window = ""
    if outcome.started < datetime.now(UTC) - timedelta(days=STATEMENT_DEFAULT_DAYS):
        window = f" --from {outcome.started.isoformat()}"
    return [
        f"Try next ({where}):",
        f"  {md} account statement {statement} {org}{window}",
        f"  {md} account statement {statement} {org}{window} --json",
        f"  {md} account balance {owing} {org}",
        f"  {md} recharge {owing} 100 {org} --key my-first-recharge",
        f"  {md} quarantine list {org}",
        f"  {md} command list {org}",
        f'  {md} tariff show "{COMMERCIAL}" {org}',
        f"  {md} --help",
        *([f"  tail {_shown(log)}    # the messages tenants were sent"] if log else []),
    ]


def _shown(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative
