"""What the demo prints. On a terminal, a live panel (status and the eight lowest balances)
stays at the bottom and is redrawn every simulated hour while events scroll above it. Piped to a
file there are no cursor tricks: events and an hourly status line are printed as they happen,
and the table of lowest balances every six simulated hours."""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from zoneinfo import ZoneInfo

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from meterdesk.demo.plan import TenantPlan
from meterdesk.demo.queries import AccountState
from meterdesk.demo.simulation import Event, Hour, level
from meterdesk.shared.money import from_fen

LOWEST = 8
TABLE_EVERY_HOURS = 6


def status_line(hour: Hour, tz: ZoneInfo, *, joint: str = "  │ ") -> str:
    tally = hour.tally
    levels = [level(state) for state in hour.states.values()]
    return (
        f"{hour.at.astimezone(tz):%a %m-%d %H:%M}  readings {tally.accepted:,}  "
        f"deducted {from_fen(tally.deducted_fen):,}  recharges {tally.recharges}{joint}"
        f"low {levels.count(1)} · overdraft {levels.count(2)} · arrears {levels.count(3)}  │ "
        f"duplicates {tally.duplicates} · late {tally.late} · quarantined {tally.quarantined}"
    )


def event_line(event: Event, tz: ZoneInfo) -> str:
    return f"  {event.at.astimezone(tz):%a %H:%M}  {event.text}"


def lowest_table(
    states: dict[str, AccountState], tenants: dict[str, TenantPlan], *, title: str
) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    table.add_column("account")
    table.add_column("room")
    table.add_column("tenant")
    table.add_column("balance", justify="right")
    table.add_column("arrears", justify="right")
    ordered = sorted(states.values(), key=lambda s: (s.balance_fen - s.arrears_fen, s.number))
    for state in ordered[:LOWEST]:
        tenant = tenants[state.number]
        table.add_row(
            state.number,
            tenant.label,
            tenant.customer,
            _balance(state),
            f"{from_fen(state.arrears_fen):,}" if state.arrears_fen else "",
            style="bold red" if state.arrears_fen else None,
        )
    return table


def _balance(state: AccountState) -> str:
    """Money, and for a quantity account (购量) the quantity left that money stands for."""
    money = f"{from_fen(state.balance_fen):,}"
    if state.quantity_left is None:
        return money
    return f"{state.quantity_left:.2f} {state.unit} · {money}"


class PlainView:
    """For pipes and files: lines only."""

    def __init__(self, console: Console, tz: ZoneInfo, tenants: dict[str, TenantPlan]) -> None:
        self.console, self.tz, self.tenants = console, tz, tenants

    def __enter__(self) -> PlainView:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        return None

    def event(self, event: Event) -> None:
        self.console.print(Text(event_line(event, self.tz)), soft_wrap=True)

    def hour(self, hour: Hour) -> None:
        self.console.print(Text(status_line(hour, self.tz)), soft_wrap=True)
        local = hour.at.astimezone(self.tz)
        if local.hour % TABLE_EVERY_HOURS == 0 and local.minute == 0:
            self.console.print(lowest_table(hour.states, self.tenants, title=_title(local)))


class LiveView(PlainView):
    """For a terminal: the panel is redrawn in place; events scroll above it."""

    def __init__(self, console: Console, tz: ZoneInfo, tenants: dict[str, TenantPlan]) -> None:
        super().__init__(console, tz, tenants)
        self.live = Live(console=console, auto_refresh=False, transient=False)

    def __enter__(self) -> LiveView:
        self.live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.live.stop()

    def event(self, event: Event) -> None:
        self.live.console.print(Text(event_line(event, self.tz)))

    def hour(self, hour: Hour) -> None:
        local = hour.at.astimezone(self.tz)
        panel = Panel(
            Group(
                Text(status_line(hour, self.tz, joint="\n")),
                lowest_table(hour.states, self.tenants, title=_title(local)),
            ),
            title="meterdesk demo — live",
            title_align="left",
        )
        self.live.update(panel, refresh=True)


def _title(local: datetime) -> str:
    return f"{LOWEST} lowest balances at {local:%a %m-%d %H:%M}"


def make_view(
    console: Console, tz: ZoneInfo, tenants: dict[str, TenantPlan]
) -> PlainView | LiveView:
    if console.is_terminal and not console.is_dumb_terminal:
        return LiveView(console, tz, tenants)
    return PlainView(console, tz, tenants)
