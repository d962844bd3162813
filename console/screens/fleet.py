"""Fleet: one row per host, worst first; `/` filters, 1-9 sort, Enter drills down."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Input

from console.fleet import COLUMNS, DESCENDING, FleetRow
from console.screens.base import FilteredScreen
from console.theming import severity_style
from console.widgets.fleet_table import FleetTable, TableRow
from console.widgets.titlebar import TitleBar


class FleetScreen(FilteredScreen):
    where = "fleet"
    BINDINGS = [
        Binding("slash", "filter", "Filter", id="fleet.filter"),
        Binding("enter", "open", "Host", id="fleet.open"),
        Binding("s", "next_sort", "Sort", id="fleet.sort"),
        Binding("S", "reverse_sort", "Reverse", id="fleet.reverse"),
        *(
            Binding(str(i + 1), f"sort('{c}')", f"Sort {c}", show=False, id=f"fleet.sort_{c}")
            for i, c in enumerate(COLUMNS)
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.sort = "status"
        self.reverse: bool | None = None
        self.query_text = ""
        self.cells: dict[str, TableRow] = {}

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield Input(placeholder="filter: name, role=web, status:down (Esc closes)", id="filter")
        yield FleetTable(COLUMNS, id="fleet")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one(FleetTable).focus()
        self.refresh_view()

    # -- view ------------------------------------------------------------------

    def view(self) -> tuple[list[FleetRow], dict[str, int]]:
        return self.model.view(
            self.hadeck.clock(), sort=self.sort, reverse=self.reverse, query=self.query_text
        )

    def refresh_view(self) -> None:
        rows, counts = self.view()
        theme = self.app.current_theme
        summary = "  ".join(
            f"[{severity_style(theme, k)}]{n} {k}[/]" for k, n in counts.items() if n
        )
        arrow = "" if self.reverse is None else (" desc" if self.reverse else " asc")
        shown = f"{len(rows)}/{len(self.model.hosts)} hosts"
        self.query_one(TitleBar).show(
            f"fleet  {shown}  sort:{self.sort}{arrow}"
            + (f"  filter:{self.query_text}" if self.query_text else ""),
            self.hadeck.environment,
            summary,
            self.hadeck.read_only,
        )
        self.update_table(rows)

    def update_table(self, rows: list[FleetRow]) -> None:
        """Rows are rebuilt only when what they show changed; the table renders only those."""
        theme = self.app.current_theme
        warn = severity_style(theme, "warning")
        table = self.query_one(FleetTable)
        built = []
        for r in rows:
            values = (
                r.key, r.status, r.services, r.failing, r.roles,
                r.cpu, r.memory, r.disk, r.seen, r.severity, theme.name,
            )  # fmt: skip
            row = self.cells.get(r.key)
            if row is None or row.values != values:
                style = severity_style(theme, r.severity)
                styles = (
                    "bold",
                    style,
                    style if "down" in r.services else "",
                    warn if r.failing != "-" else "",
                    "", "", "", "",
                    style if r.seen != "live" else "",
                )  # fmt: skip
                row = self.cells[r.key] = table.make_row(r.key, values, styles)
            built.append(row)
        descending = self.sort in DESCENDING if self.reverse is None else self.reverse
        table.header_note = {self.sort: " v" if descending else " ^"}
        table.set_rows(built)

    # -- actions ---------------------------------------------------------------

    def results(self) -> FleetTable:
        return self.query_one(FleetTable)

    def action_sort(self, column: str) -> None:
        if self.sort == column:
            self.action_reverse_sort()
            return
        self.sort, self.reverse = column, None
        self.refresh_view()

    def action_next_sort(self) -> None:
        self.action_sort(COLUMNS[(COLUMNS.index(self.sort) + 1) % len(COLUMNS)])

    def action_reverse_sort(self) -> None:
        current = self.reverse if self.reverse is not None else self.sort in DESCENDING
        self.reverse = not current
        self.refresh_view()

    def on_fleet_table_header_selected(self, event: FleetTable.HeaderSelected) -> None:
        self.action_sort(event.column)

    def selected(self) -> str | None:
        return self.query_one(FleetTable).cursor_key()

    def action_open(self) -> None:
        if (host := self.selected()) is not None:
            self.hadeck.open_host(host)

    def on_fleet_table_row_selected(self, event: FleetTable.RowSelected) -> None:
        self.hadeck.open_host(event.key)
