"""Fleet: one row per host, worst first; `/` filters, 1-9 sort, Enter drills down."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input

from console.fleet import COLUMNS, DESCENDING, FleetRow
from console.screens.base import HadeckScreen
from console.theming import severity_style
from console.widgets.titlebar import TitleBar

SEVERITY_COLOURED = frozenset({"status", "services", "seen"})


class FleetScreen(HadeckScreen):
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
        self.shown: list[str] = []
        self.cells: dict[str, tuple[str, ...]] = {}

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield Input(placeholder="filter: name, role=web, status:down (Esc closes)", id="filter")
        table: DataTable[str | Text] = DataTable(id="fleet", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for c in COLUMNS:
            table.add_column(c.upper(), key=c)
        self.query_one("#filter", Input).display = False
        table.focus()
        self.refresh_view()

    # -- view ------------------------------------------------------------------

    def rows(self) -> list[FleetRow]:
        return self.view()[0]

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
        """Touch only what changed: add, remove, update cells by key, then reorder."""
        table = self.query_one(DataTable)
        theme = self.app.current_theme
        wanted = {r.key for r in rows}
        with self.app.batch_update():
            for key in [k for k in self.cells if k not in wanted]:
                table.remove_row(key)
                del self.cells[key]
            for r in rows:
                values = (
                    r.key, r.status, r.services, r.failing, r.roles,
                    r.cpu, r.memory, r.disk, r.seen, r.severity,
                )  # fmt: skip
                old = self.cells.get(r.key)
                if old == values:
                    continue
                style = severity_style(theme, r.severity)
                warn = severity_style(theme, "warning")
                cells = [
                    Text(r.key, style="bold"),
                    Text(r.status, style=style),
                    Text(r.services, style=style if "down" in r.services else ""),
                    Text(r.failing, style=warn if r.failing != "-" else ""),
                    r.roles, r.cpu, r.memory, r.disk,
                    Text(r.seen, style=style if r.seen != "live" else ""),
                ]  # fmt: skip
                if old is None:
                    table.add_row(*cells, key=r.key)
                else:
                    recolour = old[-1] != r.severity
                    for col, new, before, cell in zip(COLUMNS, values, old, cells, strict=False):
                        if new != before or (recolour and col in SEVERITY_COLOURED):
                            # Columns only grow: shrinking makes Textual re-measure every cell
                            # of the column, which at a thousand hosts costs seconds.
                            width = cell.cell_len if isinstance(cell, Text) else len(str(cell))
                            grow = width > table.columns[col].content_width  # type: ignore[index]
                            table.update_cell(r.key, col, cell, update_width=grow)
                self.cells[r.key] = values
            order = [r.key for r in rows]
            if order != self.shown:
                position = {k: i for i, k in enumerate(order)}
                table.sort("host", key=lambda cell: position[str(cell)])
                self.shown = order

    # -- actions ---------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self.refresh_view()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(DataTable).focus()

    def on_key(self, event: object) -> None:
        from textual.events import Key

        if isinstance(event, Key) and event.key == "escape":
            box = self.query_one("#filter", Input)
            if box.has_focus:
                box.display = bool(box.value)
                self.query_one(DataTable).focus()
                event.stop()

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

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.action_sort(str(event.column_key.value))

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_open(self) -> None:
        if (host := self.selected()) is not None:
            self.hadeck.open_host(host)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.hadeck.open_host(str(event.row_key.value))
