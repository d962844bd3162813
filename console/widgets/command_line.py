"""The `:` command line (k9s style): completion from the known commands and hosts, history."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input


class CommandLine(ModalScreen[str | None]):
    DEFAULT_CSS = """
    CommandLine { align: left bottom; background: $background 0%; }
    CommandLine Input { dock: bottom; width: 100%; border: tall $primary; }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="command.cancel"),
        Binding("up", "history(-1)", "Previous", show=False, id="command.previous"),
        Binding("down", "history(1)", "Next", show=False, id="command.next"),
    ]

    def __init__(self, completions: list[str], history: list[str]) -> None:
        super().__init__()
        self.completions = completions
        self.history = history
        self.position = len(history)

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder=":fleet  :host NAME  :events [HOST]  :audit  :theme NAME  :quit",
            suggester=SuggestFromList(self.completions, case_sensitive=False),
            id="command",
        )

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip().lstrip(":") or None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self.position = max(0, min(len(self.history), self.position + step))
        value = self.history[self.position] if self.position < len(self.history) else ""
        box = self.query_one(Input)
        box.value = value
        box.cursor_position = len(value)
