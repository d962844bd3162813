"""Events: the whole fleet's events on one timeline, newest first.

`/` filters with words: `host:NAME`, `service:NAME`, `severity:warning` (that
level and worse), and any other word must appear in the host, what or message.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Input

from agent.schema import Event
from console.format import stamp
from console.screens.base import FilteredScreen
from console.theming import severity_style
from console.widgets.titlebar import TitleBar

SHOWN = 1000


def parse_filter(query: str) -> tuple[dict[str, str], list[str]]:
    fields: dict[str, str] = {}
    words = []
    for w in query.split():
        key, sep, value = w.partition(":")
        if sep and key in ("host", "service", "severity") and value:
            fields[key] = value
        else:
            words.append(w.lower())
    return fields, words


class EventsScreen(FilteredScreen):
    where = "events"
    BINDINGS = [Binding("slash", "filter", "Filter", id="events.filter")]

    def __init__(self, query: str = "") -> None:
        super().__init__()
        self.query_text = query
        self.shown_key: tuple[object, ...] = ()

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield Input(
            value=self.query_text,
            placeholder="filter: host:NAME service:NAME severity:warning words (Esc closes)",
            id="filter",
        )
        yield DataTable(id="events", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table: DataTable[str | Text] = self.query_one(DataTable)
        for c in ("time", "host", "severity", "what", "kind", "message"):
            table.add_column(c.upper(), key=c)
        self.query_one("#filter", Input).display = bool(self.query_text)
        table.focus()
        self.refresh_view()

    def events(self) -> list[tuple[str, Event]]:
        fields, words = parse_filter(self.query_text)
        picked = self.model.merged_events(
            fields.get("host", ""), fields.get("service", ""), fields.get("severity", "")
        )
        if words:
            picked = [
                (h, e)
                for h, e in picked
                if all(
                    w in f"{h} {e.service or ''} {e.probe or ''} {e.kind} {e.message}".lower()
                    for w in words
                )
            ]
        return picked[:SHOWN]

    def refresh_view(self) -> None:
        picked = self.events()
        self.query_one(TitleBar).show(
            f"events  {len(picked)} shown of {len(self.model.events)}"
            + (f"  filter:{self.query_text}" if self.query_text else ""),
            self.hadeck.environment,
            read_only=self.hadeck.read_only,
        )
        key = (
            self.query_text,
            len(picked),
            picked[0][1].id if picked else None,
            picked[0][0] if picked else None,
        )
        if key == self.shown_key:
            return
        self.shown_key = key
        theme = self.app.current_theme
        table: DataTable[str | Text] = self.query_one(DataTable)
        with self.app.batch_update():
            table.clear()
            for h, e in picked:
                table.add_row(
                    stamp(e.ts),
                    h,
                    Text(e.severity, style=severity_style(theme, e.severity)),
                    e.service or e.probe or "-",
                    e.kind,
                    e.message,
                    key=f"{h}/{e.id}",
                )

    def set_query(self, text: str) -> None:
        self.query_text = text
        if self.is_mounted:
            box = self.query_one("#filter", Input)
            box.value, box.display = text, True

    def results(self) -> DataTable[str | Text]:
        return self.query_one(DataTable)
