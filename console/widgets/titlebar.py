"""The top line of every screen: where you are, which environment, how the fleet is."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget


class TitleBar(Widget):
    """One line, fixed height: a new title repaints this line only, never the layout
    (it changes every second on a busy fleet)."""

    DEFAULT_CSS = """
    TitleBar { height: 1; background: $panel; color: $foreground; padding: 0 1; }
    """
    title: reactive[Text] = reactive(Text, layout=False)

    def render(self) -> Text:
        return self.title

    def show(
        self, where: str, environment: str | None, counts: str = "", read_only: bool = False
    ) -> None:
        theme = self.app.current_theme
        t = Text()
        t.append("hadeck ", style="bold")
        if environment:
            # The environment in the theme's warning colour: nobody mistakes prod for staging.
            t.append(f" {environment.upper()} ", style=f"bold reverse {theme.warning}")
            t.append(" ")
        if read_only:
            t.append(" READ-ONLY ", style=f"reverse {theme.secondary}")
            t.append(" ")
        t.append(where, style=f"bold {theme.primary}")
        if counts:
            t.append("  ")
            t.append_text(Text.from_markup(counts))
        if t != self.title:
            self.title = t
