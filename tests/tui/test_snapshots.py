"""What each screen looks like, at the usual 120x40 and at a cramped 80x24.

Deterministic by construction: a pinned clock, UTC, a fixed in-memory fleet,
no blinking cursors. Update after a deliberate change with
`bash tests/run tests/tui --snapshot-update`, and look at the SVGs before committing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from console.screens.group_history import GroupHistory
from console.widgets.confirm import ConfirmAction
from tests.tui.conftest import App, loaded, until


def prepared(*keys: str, confirm: bool = False) -> Callable[[Pilot[Any]], Any]:
    async def run_before(pilot: Pilot[Any]) -> None:
        await loaded(pilot)
        await pilot.press(*keys)
        await pilot.pause()
        if confirm:  # the dialog opens once the agent's plan is in
            await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmAction))
        screen = pilot.app.screen

        def fetched() -> bool:
            """the handover history"""
            return not isinstance(screen, GroupHistory) or screen.records is not None

        await until(pilot, fetched)
        for box in pilot.app.screen.query(Input):
            box.cursor_blink = False
        pilot.app.tick()  # type: ignore[attr-defined]
        await pilot.pause()

    return run_before


SCREENS = {
    "fleet": (),
    "host": ("enter",),
    "host-probes": ("enter", "tab", "down"),
    "confirm-restart": ("enter", "r"),
    "events": ("e",),
    "help": ("question_mark",),
    "groups": ("g",),
    "confirm-switchover": ("g", "down", "s"),
    "confirm-failover": ("g", "down", "F"),
    "group-history": ("g", "h"),
}


@pytest.mark.parametrize("screen", SCREENS)
@pytest.mark.parametrize("size", [(120, 40), (80, 24)], ids=["120x40", "80x24"])
def test_screen(
    screen: str, size: tuple[int, int], make_app: Callable[..., App], snap_compare: Any
) -> None:
    app, _ = make_app()
    assert snap_compare(
        app,
        terminal_size=size,
        run_before=prepared(*SCREENS[screen], confirm=screen.startswith("confirm")),
    )
