"""What every hadeck screen shares: the title bar, the footer, a 1 Hz refresh from the model."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.screen import Screen

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
