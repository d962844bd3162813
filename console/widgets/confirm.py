"""The one confirmation every action goes through: the plan, verbatim, then yes or no.

It shows the host, exactly what will run, and the warnings; it takes an optional
reason for the audit log; a forced action (type_to_confirm) stays disabled until
the operator has typed the word. It returns the reason, or None when cancelled.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from console.actions import Plan


class ConfirmAction(ModalScreen[str | None]):
    DEFAULT_CSS = """
    ConfirmAction { align: center middle; }
    ConfirmAction > Vertical {
        width: 90; max-width: 95%; height: auto; max-height: 90%;
        border: thick $warning; background: $surface; padding: 1 2;
    }
    ConfirmAction .title { text-style: bold; margin-bottom: 1; }
    ConfirmAction .runs { background: $panel; padding: 0 1; margin-bottom: 1; }
    ConfirmAction .warning { color: $warning; }
    ConfirmAction Input { margin-top: 1; }
    ConfirmAction Horizontal { height: auto; margin-top: 1; align-horizontal: right; }
    ConfirmAction Button { margin-left: 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="confirm.cancel")]

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan

    def compose(self) -> ComposeResult:
        p = self.plan
        with Vertical():
            yield Label(f"{p.action.capitalize()} {p.target} on {p.host}?", classes="title")
            yield Label(f"host: {p.host}    agent endpoint: POST {p.path}")
            yield Label("will run:")
            yield Static(Text("\n".join(p.runs)), classes="runs", id="runs")
            for w in p.warnings:
                yield Label(f"! {w}", classes="warning")
            yield Input(placeholder="reason (for the audit log, optional)", id="reason")
            if p.type_to_confirm:
                yield Input(placeholder=f"type {p.type_to_confirm!r} to confirm", id="typed")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button(
                    "Confirm", id="confirm", variant="warning", disabled=bool(p.type_to_confirm)
                )

    def on_mount(self) -> None:
        self.query_one("#reason", Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "typed":
            self.query_one("#confirm", Button).disabled = event.value != self.plan.type_to_confirm

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if not self.query_one("#confirm", Button).disabled:
            self._confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            self._confirm()
        else:
            self.dismiss(None)

    def _confirm(self) -> None:
        self.dismiss(self.query_one("#reason", Input).value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
