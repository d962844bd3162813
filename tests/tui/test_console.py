"""The console, driven by keys as an operator drives it (Pilot), against an in-memory fleet."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from textual.widgets import Button, DataTable, Input, Static

from agent.schema import AuditRecord, GroupActionResult
from console import actions
from console.inventory import Haproxy
from console.palette import HadeckCommands
from console.screens.events import EventsScreen
from console.screens.fleet import FleetScreen
from console.screens.group_history import GroupHistory
from console.screens.groups import GroupsScreen
from console.screens.help import HelpScreen
from console.screens.host import HostScreen
from console.widgets.confirm import ConfirmAction
from console.widgets.fleet_table import FleetTable
from tests.support.fake_fleet import NOW
from tests.tui.conftest import App, loaded, until


def fleet_keys(app: object) -> list[str]:
    screen = app.screen  # type: ignore[attr-defined]
    assert isinstance(screen, FleetScreen)
    return screen.query_one(FleetTable).row_keys()


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
        await until(pilot, lambda: isinstance(app.screen, ConfirmAction))
        assert isinstance(app.screen, ConfirmAction)
        # The agent's own plan (dry_run), not the console's guess.
        assert app.screen.plan.runs == ["systemctl restart web.service"]
        assert app.screen.plan.source == "web-03's agent"
        assert [p[0] for p in transports["web-03"].plans] == ["/api/v1/services/web/restart"]
        await pilot.press("escape")  # cancelled: nothing sent
        assert transports["web-03"].posts == []
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmAction))
        await pilot.press(*"oom again", "enter")

        def acted() -> bool:
            """the restart's outcome"""
            return bool(app.outcomes)

        await until(pilot, acted)
        path, body, headers = transports["web-03"].posts[0]
        assert path == "/api/v1/services/web/restart"
        assert body == {"reason": "oom again"}
        assert headers["X-Hadeck-Actor"] == "alice@bastion"
        assert app.outcomes[0].ok


async def test_a_slow_agents_late_plan_opens_no_second_dialog(
    make_app: Callable[..., App],
) -> None:
    app, transports = make_app()
    transports["web-03"].plan_delays = [1.0]  # the first preview is slow, the second is not
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("enter", "r")
        await pilot.pause(0.1)
        await pilot.press("r")  # asked again before the first answered
        await until(pilot, lambda: isinstance(app.screen, ConfirmAction))

        def both_answered() -> bool:
            """both previews answered"""
            return len(transports["web-03"].plans) == 2 and not [
                w for w in app.workers if w.group == "previews" and not w.is_finished
            ]

        await until(pilot, both_answered)
        await pilot.pause()  # the late answer, delivered to the app, has been handled
        dialogs = [s for s in app.screen_stack if isinstance(s, ConfirmAction)]
        assert len(dialogs) == 1, app.screen_stack


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
        # The events filter box closes on Esc and keeps its filter, as the fleet's does.
        await pilot.press("slash")
        await pilot.press("escape")
        box = app.screen.query_one("#filter", Input)
        assert not box.has_focus and box.value == "severity:critical"
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


# -- HA groups ------------------------------------------------------------------------


def group_rows(app: object) -> list[str]:
    screen = app.screen  # type: ignore[attr-defined]
    assert isinstance(screen, GroupsScreen)
    table = screen.query_one(DataTable)
    return [str(table.coordinate_to_cell_key((i, 0)).row_key.value) for i in range(table.row_count)]


async def finished(pilot: object, app: object) -> None:
    def acted() -> bool:
        """the action's outcome"""
        return bool(app.outcomes)  # type: ignore[attr-defined]

    await until(pilot, acted)  # type: ignore[arg-type]


async def test_groups_screen_lists_members_primary_first(make_app: Callable[..., App]) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("g")
        assert group_rows(app) == ["pg/db-01", "pg/db-04"]
        table = app.screen.query_one(DataTable)
        assert [str(c) for c in table.get_row_at(0)][:6] == [
            "pg", "db-01", "db-01", "primary", "yes", "yes",
        ]  # fmt: skip
        summary = str(app.screen.query_one("#group-summary", Static).render())
        assert "leader db-01  token 7  lease 8.5s left" in summary
        assert "last handover 3h ago: switchover db-04 → db-01 by bob@bastion" in summary
        await pilot.press("f", "colon", *"groups", "enter")
        assert isinstance(app.screen, GroupsScreen)


async def test_groups_screen_shows_what_failsafe_mode_is_doing(
    make_app: Callable[..., App],
) -> None:
    """The agent's own words: a primary holding on by failsafe mode with the store away."""
    app, transports = make_app()
    t = transports["db-01"]  # the leader: its report is the group's
    (gs,) = t.status.groups
    held = "primary by failsafe mode for 4.2s: the lease store does not answer"
    gs = gs.model_copy(update={"failsafe": held, "store_error": "etcd renew: no answer"})
    t.status = t.status.model_copy(update={"groups": [gs]})
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("g")
        summary = str(app.screen.query_one("#group-summary", Static).render())
        assert "lease store: etcd renew: no answer" in summary
        assert f"failsafe: {held}" in summary


async def test_switchover_shows_the_target_and_sends_it_to_the_rows_agent(
    make_app: Callable[..., App],
) -> None:
    app, transports = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("g", "down", "s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmAction))
        dialog = app.screen
        assert isinstance(dialog, ConfirmAction)
        assert dialog.plan.host == "db-04" and dialog.plan.body == {"to": "db-04"}
        assert dialog.plan.runs[:2] == [
            "db-01 runs its demote hook and releases the lease of pg",
            "db-04 (lag 0.4s, priority 50) takes the lease and runs its promote hook",
        ]
        body = str(dialog.query_one("#body", Static).render())
        assert body == 'request body: {"to": "db-04", "reason": <below>}'
        await pilot.press("escape")  # cancelled: nothing sent
        assert all(t.posts == [] for t in transports.values())
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmAction))
        await pilot.press(*"kernel update", "enter")
        await finished(pilot, app)
        path, sent, headers = transports["db-04"].posts[0]
        assert path == "/api/v1/groups/pg/switchover"
        assert sent == {"to": "db-04", "reason": "kernel update"}
        assert headers["X-Hadeck-Actor"] == "alice@bastion"
        outcome = app.outcomes[0]
        assert outcome.ok and isinstance(outcome.result, GroupActionResult)
        # The operation (202) was followed to its result.
        assert outcome.message == "db-04 is primary after 2.1s"
        # On the primary's row: to the best standby as the agent ranks it, sent as the
        # target, so what is confirmed is what happens.
        await pilot.press("up", "s")
        await until(pilot, lambda: isinstance(app.screen, ConfirmAction))
        assert isinstance(app.screen, ConfirmAction)
        assert app.screen.plan.host == "db-01" and app.screen.plan.body == {"to": "db-04"}
        assert app.screen.plan.title == "switchover pg from db-01 to db-04"
        assert app.screen.plan.runs[-1].startswith("standbys as the agents rank them: 1. db-04")


async def test_forced_failover_stays_disabled_until_the_group_name_is_typed(
    make_app: Callable[..., App],
) -> None:
    app, transports = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("g", "down", "F")
        await until(pilot, lambda: isinstance(app.screen, ConfirmAction))
        dialog = app.screen
        assert isinstance(dialog, ConfirmAction) and dialog.plan.type_to_confirm == "pg"
        assert dialog.plan.warnings[0].startswith("db-04 lags 0.4s behind the primary")
        confirm = dialog.query_one("#confirm", Button)
        assert confirm.disabled
        await pilot.press("enter")  # in the reason box: nothing happens while disabled
        assert app.screen is dialog
        await pilot.press("tab", "p")
        assert confirm.disabled
        await pilot.press("g")
        assert not confirm.disabled
        await pilot.press("enter")
        await finished(pilot, app)
        path, sent, _ = transports["db-04"].posts[0]
        assert path == "/api/v1/groups/pg/failover"
        assert sent == {"to": "db-04", "confirm": "pg", "reason": ""}


async def test_read_only_console_refuses_every_group_action(make_app: Callable[..., App]) -> None:
    app, transports = make_app(read_only=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("g", "down", "s", "F", "p", "u", "d", "r")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, GroupsScreen)  # no confirmation ever opened
        for action in ("switchover", "failover", "pause", "resume", "drain", "ready"):
            assert screen.check_action(action, ()) is None
        view = app.model.groups(app.clock())[0]
        app.request_action(actions.switchover("db-04", view.status, "db-04"))
        await pilot.pause()
        assert app.screen is screen
        assert all(t.posts == [] for t in transports.values())
        await pilot.press("h")  # reading the history is not an action
        assert isinstance(app.screen, GroupHistory)


async def test_history_lists_the_groups_handovers(make_app: Callable[..., App]) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("g", "down", "h")
        modal = app.screen
        assert isinstance(modal, GroupHistory) and modal.hosts == ["db-04", "db-01"]

        def fetched() -> bool:
            """the history"""
            return modal.records is not None

        await until(pilot, fetched)
        table = modal.query_one(DataTable)
        assert table.row_count == 2
        assert [str(c) for c in table.get_row_at(0)] == [
            "2027-01-15 05:00:00", "switchover", "db-04", "db-01", "bob@bastion",
            "0s", "0s", "0.004s", "1.2s", "7", "kernel update on db-04",
        ]  # fmt: skip
        await pilot.press("escape")
        assert isinstance(app.screen, GroupsScreen)


async def test_drain_without_haproxy_says_what_to_add(make_app: Callable[..., App]) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("g", "d")
        await pilot.pause()
        assert isinstance(app.screen, GroupsScreen)
        assert any(
            "no HAProxy in the inventory: add a top-level `haproxy:" in n.message
            for n in app._notifications
        )


async def test_drain_goes_to_haproxys_runtime_api(make_app: Callable[..., App]) -> None:
    # A stand-in for HAProxy's admin socket: one command, an empty answer (success).
    path = Path(tempfile.mkdtemp(prefix="hd-", dir="/tmp")) / "admin.sock"
    got: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(10)

    def answer() -> None:
        with server, server.accept()[0] as conn:
            got.append(conn.recv(1024))

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    cfg = Haproxy(socket=path, backends={"pg": "pg_primary"})
    app, transports = make_app(haproxy=cfg)
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("g", "down", "d")
        assert isinstance(app.screen, ConfirmAction)
        assert app.screen.plan.runs == ["set server pg_primary/db-04 state drain"]
        await pilot.press("enter")
        await finished(pilot, app)
    thread.join(5)
    path.unlink(missing_ok=True)
    path.parent.rmdir()
    assert got == [b"set server pg_primary/db-04 state drain\n"]
    assert app.outcomes[0].ok, app.outcomes[0].message
    assert all(t.posts == [] for t in transports.values())


async def test_the_palette_offers_each_groups_actions(make_app: Callable[..., App]) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        names = [name for name, _, _ in HadeckCommands(app.screen).commands()]
        assert {
            "Go to groups",
            "Switchover pg from db-01 to the best standby",
            "Switchover pg from db-01 to db-04",
            "Forced failover of pg to db-04",
            "Pause pg",
            "Handover history of pg",
        } <= set(names)


async def test_fleet_cursor_keys_and_mouse(make_app: Callable[..., App]) -> None:
    app, _ = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        second = fleet_keys(app)[1]
        await pilot.press("down", "enter")
        assert isinstance(app.screen, HostScreen) and app.screen.host == second
        await pilot.press("escape")
        # The cursor stays on the host it was put on, whatever the order becomes.
        await pilot.press("1")
        await pilot.pause()
        table = app.screen.query_one(FleetTable)
        assert table.cursor_key() == second
        # Clicking a column header sorts by it; clicking a row moves the cursor there.
        cpu_header = table.render_line(0).text.index("CPU")
        await pilot.click(FleetTable, offset=(cpu_header + 1, 0))
        await pilot.pause()
        assert app.screen.sort == "cpu"  # type: ignore[attr-defined]
        await pilot.click(FleetTable, offset=(2, 3))
        assert table.cursor == 2
        await pilot.press("end")
        assert table.cursor == table.row_count - 1


def _record(seq: int, ts: float, action: str, ok: bool, **params: str) -> AuditRecord:
    return AuditRecord(
        seq=seq,
        ts=ts,
        actor="alice@bastion",
        action=action,
        target="web",
        params=params,
        result={"ok": ok, "message": "exit 0" if ok else "exit 1"},
        prev="0" * 64,
        hash=f"{seq:064d}",
    )


async def test_audit_lists_every_hosts_records_newest_first_and_names_the_unreachable(
    make_app: Callable[..., App],
) -> None:
    app, transports = make_app()
    transports["web-02"].audit = [_record(1, NOW - 60, "restart", True, reason="stuck workers")]
    transports["web-03"].audit = [_record(1, NOW - 30, "runbook", False)]
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        transports["db-04"].reachable = False
        await pilot.press("a")
        table = app.screen.query_one("#audit", DataTable)

        def listed() -> bool:
            """both records in the audit table"""
            return table.row_count == 2

        await until(pilot, listed)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(2)]
        assert [r[1:6] for r in rows] == [
            ["web-03", "alice@bastion", "runbook", "web", "failed"],
            ["web-02", "alice@bastion", "restart", "web", "ok"],
        ]
        assert rows[0][6] == "exit 1"  # no reason given: the result's message
        assert rows[1][6] == "stuck workers"
        assert "1 hosts unreachable" in str(app.screen.query_one("TitleBar").render())
        # A record made since is listed on reload (R), on top.
        transports["web-02"].audit.append(_record(2, NOW, "restart", True))
        await pilot.press("R")

        def reloaded() -> bool:
            """the new record listed"""
            return table.row_count == 3

        await until(pilot, reloaded)
        assert str(table.get_row_at(0)[0]) != rows[0][0]


async def test_a_runbook_is_picked_from_the_hosts_list_then_confirmed(
    make_app: Callable[..., App],
) -> None:
    from console.screens.pick import Pick

    app, transports = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded(pilot)
        await pilot.press("enter", "b")
        await until(pilot, lambda: isinstance(app.screen, Pick))
        await pilot.press("escape")  # picked nothing: nothing asked, nothing sent
        assert isinstance(app.screen, HostScreen)
        await pilot.press("b")
        await until(pilot, lambda: isinstance(app.screen, Pick))
        await pilot.press("enter")  # the only runbook, highlighted
        await until(pilot, lambda: isinstance(app.screen, ConfirmAction))
        assert isinstance(app.screen, ConfirmAction)
        assert [p[0] for p in transports["web-03"].plans] == ["/api/v1/runbooks/flush-cache/run"]
        assert transports["web-03"].posts == []
