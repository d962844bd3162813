"""An HA group's handovers, newest first: when, kind, from, to, who, step durations, why.

Fetched once when opened, in a worker thread, from the first of the group's agents that
answers (every member reads the same lease store).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label

from agent.schema import HandoverRecord
from console.format import stamp
from console.transport import TransportError

if TYPE_CHECKING:
    from console.app import HadeckApp


#: The steps a promotion is timed in (agent/failover/member.py), in order; `wait` is the
#: time a standby let pass for a vanished lease's holder to reach its deadline.
STEPS = ("detect", "wait", "acquire", "promote")


def seconds(value: float | None) -> str:
    """Three significant digits: `4.9s`, `0.003s`, `12.3s`."""
    return "-" if value is None else f"{value:.3g}s"


class GroupHistory(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close", id="history.close")]

    def __init__(self, group: str, hosts: list[str]) -> None:
        super().__init__()
        self.group = group
        #: Asked in this order until one answers.
        self.hosts = hosts
        self.records: list[HandoverRecord] | None = None
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"Handovers of {self.group}, newest first (Esc closes)", classes="title")
            yield Label(f"asking {self.hosts[0] if self.hosts else 'nobody'}...", id="source")
            yield DataTable(id="handovers", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table: DataTable[str] = self.query_one(DataTable)
        # The reason last: the one column that may be long, and cut at 80 columns.
        for c in ("when", "kind", "from", "to", "actor", *STEPS, "token", "reason"):
            table.add_column(c.upper(), key=c)
        table.focus()
        self.fetch()

    @work(thread=True, exclusive=True, group="group-history")
    def fetch(self) -> None:
        app = cast("HadeckApp", self.app)
        problems = []
        for host in self.hosts:
            client = app.clients.get(host)
            if client is None:
                continue
            try:
                records = client.history(self.group)
            except TransportError as exc:
                problems.append(f"{host}: {exc}")
                continue
            app.call_from_thread(self.show, host, records)
            return
        app.call_from_thread(self.failed, "; ".join(problems) or "no agent of this group known")

    def show(self, host: str, records: list[HandoverRecord]) -> None:
        self.records = records
        self.query_one("#source", Label).update(
            f"{len(records)} handovers, from {host}'s agent" if records else "no handover yet"
        )
        table: DataTable[str] = self.query_one(DataTable)
        table.clear()
        for i, r in enumerate(records):
            table.add_row(
                stamp(r.at),
                r.kind,
                r.from_member or "-",
                r.to_member,
                r.actor,
                *(seconds(r.steps.get(step)) for step in STEPS),
                str(r.token),
                r.reason or "-",
                key=str(i),
            )

    def failed(self, problem: str) -> None:
        self.error = problem
        self.query_one("#source", Label).update(f"no history: {problem}")

    def action_close(self) -> None:
        self.dismiss(None)
