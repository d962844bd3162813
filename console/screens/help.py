"""`?`: every key of the screen you were on, and the global ones."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "close", "Close", id="help.close"),
    ]

    def __init__(self, where: str, keys: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.where = where
        self.keys = keys

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label(f"Keys on the {self.where} screen (Esc closes)", classes="title")
            yield DataTable(id="keys", cursor_type="row", show_cursor=False)

    def on_mount(self) -> None:
        table: DataTable[str] = self.query_one(DataTable)
        table.add_columns("KEY", "ACTION", "ID (for keymap.yaml)")
        for key, description, binding_id in self.keys:
            table.add_row(key, description, binding_id)

    def action_close(self) -> None:
        self.dismiss(None)
