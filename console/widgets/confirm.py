"""The one confirmation every action goes through: the plan, verbatim, then yes or no.

It shows the host, the endpoint and the request body, exactly what will run,
and the warnings; it takes an optional reason for the audit log; a forced
action (type_to_confirm) stays disabled until the operator has typed the word.
It returns the reason, or None when cancelled.
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
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
    ConfirmAction #plan { height: auto; }
    ConfirmAction .title { text-style: bold; margin-bottom: 1; }
    ConfirmAction .runs { background: $panel; padding: 0 1; }
    ConfirmAction .warning { color: $warning; max-width: 100%; }
    ConfirmAction .warning.last { margin-bottom: 1; }
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
            yield Label(f"{p.title[:1].upper()}{p.title[1:]}?", classes="title")
            # The plan scrolls when it does not fit (a forced failover at 80x24); the title,
            # the inputs and the buttons stay in view.
            with VerticalScroll(id="plan"):
                # What can go wrong first: at 80x24 it is what stays in view.
                for i, w in enumerate(p.warnings):
                    last = i == len(p.warnings) - 1
                    yield Label(f"! {w}", classes="warning last" if last else "warning")
                if p.haproxy is None:
                    yield Label(f"host: {p.host}    agent endpoint: POST {p.path}")
                else:
                    yield Label(f"HAProxy runtime API: {p.haproxy.socket} (from this console)")
                if p.body:
                    yield Label(f"request body: {_body(p.body)}", id="body")
                yield Label("will run:" if p.haproxy else f"will run (plan of {p.source}):")
                yield Static(Text("\n".join(p.runs)), classes="runs", id="runs")
            yield Input(placeholder="reason (for the audit log, optional)", id="reason")
            if p.type_to_confirm:
                yield Input(placeholder=f"type {p.type_to_confirm!r} to confirm", id="typed")
            with Horizontal():
                yield Button("Cancel", id="cancel")
                yield Button(
                    "Confirm", id="confirm", variant="warning", disabled=bool(p.type_to_confirm)
                )

    def on_mount(self) -> None:
        self._fit_plan()
        self.query_one("#reason", Input).focus()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_plan()

    def _fit_plan(self) -> None:
        # The dialog's 90% of the screen, less what must stay visible: border and padding
        # (4), title (2), each input (4), buttons (4).
        fixed = 4 + 2 + 4 + 4 + (4 if self.plan.type_to_confirm else 0)
        room = int(self.size.height * 0.9) - fixed
        self.query_one("#plan", VerticalScroll).styles.max_height = max(3, room)

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


def _body(fields: dict[str, Any]) -> str:
    """The JSON the agent receives; the reason is whatever is typed below."""
    parts = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in fields.items()]
    return "{" + ", ".join([*parts, '"reason": <below>']) + "}"
