"""The console, driven by keys as an operator drives it (Pilot), against an in-memory fleet."""

from __future__ import annotations

from collections.abc import Callable

from textual.widgets import DataTable, Input

from console.screens.events import EventsScreen
from console.screens.fleet import FleetScreen
from console.screens.help import HelpScreen
from console.screens.host import HostScreen
from console.widgets.confirm import ConfirmAction
from tests.tui.conftest import App, loaded, until


def fleet_keys(app: object) -> list[str]:
    screen = app.screen  # type: ignore[attr-defined]
    assert isinstance(screen, FleetScreen)
    table = screen.query_one(DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def test_fleet_lists_every_host_worst_first_with_counts(make_app: Callable[..., App]) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        keys = fleet_keys(app)
        assert len(keys) == 6 and keys[0] == "web-03"  # the one host that is down
        assert app.model.counts(app.clock())["down"] == 1


async def test_filter_narrows_and_sort_keys_reorder(make_app: Callable[..., App]) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("slash", *"role=db")
        await pilot.pause()
        assert fleet_keys(app) == ["db-01", "db-04"]
        await pilot.press("escape")  # closes the box, keeps the filter
        assert app.screen.query_one("#filter", Input).value == "role=db"
        assert fleet_keys(app) == ["db-01", "db-04"]
        await pilot.press("slash", "ctrl+u", "escape")
        await pilot.press("1")  # sort by host, ascending
        await pilot.pause()
        assert fleet_keys(app) == sorted(fleet_keys(app))
        await pilot.press("1")  # again: reversed
        await pilot.pause()
        assert fleet_keys(app) == sorted(fleet_keys(app), reverse=True)


async def test_enter_drills_down_and_escape_comes_back(make_app: Callable[..., App]) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("enter")
        assert isinstance(app.screen, HostScreen) and app.screen.host == "web-03"
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)
        await pilot.press("e")
        assert isinstance(app.screen, EventsScreen)
        await pilot.press("f")
        assert isinstance(app.screen, FleetScreen)


async def test_restart_asks_first_and_carries_the_operator(make_app: Callable[..., App]) -> None:
    app, transports = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("enter", "r")
        assert isinstance(app.screen, ConfirmAction)
        assert app.screen.plan.runs == ["systemctl restart web.service"]
        await pilot.press("escape")  # cancelled: nothing sent
        assert transports["web-03"].posts == []
        await pilot.press("r", *"oom again", "enter")

        def acted() -> bool:
            """the restart's outcome"""
            return bool(app.outcomes)

        await until(pilot, acted)
        path, body, headers = transports["web-03"].posts[0]
        assert path == "/api/v1/services/web/restart"
        assert body == {"reason": "oom again"}
        assert headers["X-Hadeck-Actor"] == "alice@bastion"
        assert app.outcomes[0].ok


async def test_read_only_console_takes_no_action(make_app: Callable[..., App]) -> None:
    app, transports = make_app(read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("enter", "r", "tab", "p", "b")
        await pilot.pause()
        assert isinstance(app.screen, HostScreen)  # no confirmation ever opened
        # the palette path is refused too
        plan = __import__("console.actions", fromlist=["restart"]).restart(
            "web-03",
            app.model.hosts["web-03"].status.services[0],  # type: ignore[union-attr]
        )
        app.request_action(plan)
        await pilot.pause()
        assert isinstance(app.screen, HostScreen)
        assert all(t.posts == [] for t in transports.values())


async def test_command_line_navigates_and_reports_unknown_commands(
    make_app: Callable[..., App],
) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("colon", *"host db-04", "enter")
        assert isinstance(app.screen, HostScreen) and app.screen.host == "db-04"
        await pilot.press("colon", *"events severity:critical", "enter")
        assert isinstance(app.screen, EventsScreen)
        assert [h for h, _ in app.screen.events()] == ["web-03"]
        await pilot.press("colon", *"frobnicate", "enter")
        await pilot.pause()
        assert any("unknown command :frobnicate" in n.message for n in app._notifications)
        await pilot.press("colon", "up", "up", "enter")  # history: the events command again
        assert isinstance(app.screen, EventsScreen)


async def test_help_lists_the_screens_keys_with_their_ids(make_app: Callable[..., App]) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("enter", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        ids = [k[2] for k in app.screen.keys]
        assert {"host.restart", "host.run_probe", "host.runbook", "app.help"} <= set(ids)


async def test_a_host_that_stops_answering_turns_stale_and_the_rest_stays_live(
    make_app: Callable[..., App],
) -> None:
    app, transports = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        transports["db-01"].reachable = False

        def failed() -> bool:
            """db-01's poll to fail"""
            return app.model.hosts["db-01"].error is not None

        await until(pilot, failed)
        now = app.clock()
        assert app.model.hosts["db-01"].connection(now, 10) in ("stale", "down")
        assert app.model.hosts["web-02"].connection(now, 10) == "live"
        await pilot.press("1")  # the UI still answers keys
        assert isinstance(app.screen, FleetScreen)


async def test_keymap_remaps_a_named_action(make_app: Callable[..., App]) -> None:
    app, _ = make_app(keymap={"host.restart": "x"})
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("enter", "x")
        assert isinstance(app.screen, ConfirmAction)


async def test_the_theme_choice_is_remembered(make_app: Callable[..., App]) -> None:
    from console import settings

    app, _ = make_app(theme=None)
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.theme == "hadeck-dark"
        app.theme = "hadeck-high-contrast"
        await pilot.pause()
    assert settings.load()["theme"] == "hadeck-high-contrast"
    again, _ = make_app(theme=None)
    async with again.run_test(size=(120, 40)):
        assert again.theme == "hadeck-high-contrast"
