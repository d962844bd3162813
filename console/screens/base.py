"""What every hadeck screen shares: the title bar, the footer, a 1 Hz refresh from the model."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual import events
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input

from console.fleet import FleetModel

if TYPE_CHECKING:
    from console.app import HadeckApp


class HadeckScreen(Screen[None]):
    #: Shown in the title bar.
    where = ""

    @property
    def hadeck(self) -> HadeckApp:
        return cast("HadeckApp", self.app)

    @property
    def model(self) -> FleetModel:
        return self.hadeck.model

    def refresh_view(self) -> None:
        """Bring the widgets up to date with the model; called about once a second."""

    def on_screen_resume(self) -> None:
        self.refresh_view()


class FilteredScreen(HadeckScreen):
    """A screen with a `/` filter box (#filter) over one results widget: typing filters at
    once, Enter goes back to the results, Esc closes the box and keeps the filter."""

    query_text = ""

    def results(self) -> Widget:
        raise NotImplementedError

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self.refresh_view()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.results().focus()

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape":
            box = self.query_one("#filter", Input)
            if box.has_focus:
                box.display = bool(box.value)
                self.results().focus()
                event.stop()
