"""The hadeck console: the App, its key bindings, screens and the flows they share.

Data flows one way: the poller fetches in worker threads, hands each result to
the model on the UI thread, and a 1 Hz tick redraws the visible screen from the
model. Actions flow the other way through one path: a Plan, the confirmation
dialog, a worker that calls the agent, a notification with the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.theme import Theme
from textual.timer import Timer

from agent.schema import Plan as AgentPlan
from agent.schema import sent_api_version
from console import actions, settings
from console.actions import Outcome, Plan
from console.agent_client import DRY_RUN_SINCE, AgentClient, AgentRefused
from console.fleet import FleetModel
from console.inventory import Haproxy
from console.palette import HadeckCommands
from console.poller import FleetPoller, Polled
from console.screens.audit import AuditScreen
from console.screens.base import HadeckScreen
from console.screens.events import EventsScreen
from console.screens.fleet import FleetScreen
from console.screens.group_history import GroupHistory
from console.screens.groups import GroupsScreen
from console.screens.help import HelpScreen
from console.screens.host import HostScreen
from console.theming import DEFAULT, load_themes
from console.transport import TransportError
from console.widgets.command_line import CommandLine
from console.widgets.confirm import ConfirmAction

#: How long the console waits for an agent's plan before showing its own description.
PREVIEW_TIMEOUT = 5.0
COMMANDS_HELP = ["fleet", "events", "audit", "groups", "host ", "theme ", "help", "quit"]


class HadeckApp(App[None]):
    TITLE = "hadeck"
    CSS_PATH = "styles/console.tcss"
    MODES: ClassVar = {
        "fleet": FleetScreen,
        "events": EventsScreen,
        "audit": AuditScreen,
        "groups": GroupsScreen,
    }
    DEFAULT_MODE = "fleet"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    COMMANDS = App.COMMANDS | {HadeckCommands}
    BINDINGS = [
        Binding("question_mark", "help", "Keys", id="app.help"),
        Binding("colon", "command_line", "Command", id="app.command"),
        Binding("f", "goto('fleet')", "Fleet", id="app.fleet"),
        Binding("e", "goto('events')", "Events", id="app.events"),
        Binding("a", "goto('audit')", "Audit", id="app.audit"),
        Binding("g", "goto('groups')", "Groups", id="app.groups"),
        Binding("ctrl+r", "poll_now", "Refresh", id="app.refresh"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(
        self,
        model: FleetModel,
        clients: dict[str, AgentClient],
        *,
        environment: str | None = None,
        haproxy: Haproxy | None = None,
        read_only: bool = False,
        actor: str | None = None,
        theme: str | None = None,
        keymap: dict[str, str] | None = None,
        poll_interval: float = 2.0,
        concurrency: int = 16,
        notice: str | None = None,
        handle_hangup: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.model = model
        self.clients = clients
        self.environment = environment
        #: Where drain and ready go (the inventory's `haproxy` section), if anywhere.
        self.haproxy = haproxy
        self.read_only = read_only
        self.actor = actor or actions.operator_identity()
        self.notice = notice
        self.handle_hangup = handle_hangup
        self.keymap_overrides = keymap or {}
        #: Every "now" the console shows comes from here (tests pin it for snapshots).
        self.clock = clock
        self.poller = FleetPoller(clients, poll_interval, concurrency, self.deliver, clock)
        self.outcomes: list[Outcome] = []
        #: Previews asked for; only the newest may open a dialog.
        self._previews = 0
        self.audit_errors: dict[str, str] = {}
        self.history: list[str] = []
        self._theme_choice = theme
        self._dirty = True
        for t in load_themes():
            self.register_theme(t)

    # -- lifecycle -------------------------------------------------------------

    def on_mount(self) -> None:
        chosen = self._theme_choice or settings.load().get("theme") or DEFAULT
        self.theme = chosen if chosen in self.available_themes else DEFAULT
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        if self.keymap_overrides:
            self.set_keymap(self.keymap_overrides)
        self.run_worker(self.poller.run(), name="poller", group="poll", exit_on_error=False)
        self.set_interval(1.0, self.tick)
        if self.handle_hangup:
            # The operator's SSH session to the bastion dropped: leave, do not linger.
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.exit)
        if self.notice:
            self.notify(self.notice, title="hadeck demo", timeout=30)

    def _remember_theme(self, theme: Theme) -> None:
        if self._theme_choice is None or theme.name != self._theme_choice:
            settings.save(theme=theme.name)
        self._dirty = True

    def on_unmount(self) -> None:
        if self.handle_hangup:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for client in self.clients.values():
            with contextlib.suppress(Exception):
                client.transport.close()

    # -- data in ---------------------------------------------------------------

    def deliver(self, polled: Polled) -> None:
        """A poll finished (on the UI loop): fold it into the model; the tick redraws."""
        if polled.status is not None:
            self.model.polled(polled.host, polled.status, polled.events or [], polled.at)
        else:
            self.model.failed(polled.host, polled.error or "unknown error", polled.at)
        self._dirty = True

    def tick(self) -> None:
        # Redraw every second even without news: ages ("stale 42s") move on their own.
        self._dirty = False
        screen = self.screen
        if isinstance(screen, HadeckScreen) and screen.is_mounted:
            # A screen being torn down (the app exiting) may have lost its widgets already.
            with contextlib.suppress(NoMatches):
                screen.refresh_view()

    def action_poll_now(self) -> None:
        self.poller.poll_now()
        self.notify("refreshing every host", timeout=2)

    @work(thread=True, exclusive=True, group="audit")
    def fetch_audit(self) -> None:
        def one(host: str) -> tuple[str, object]:
            try:
                return host, self.clients[host].audit(limit=200)
            except TransportError as exc:
                return host, str(exc)

        with ThreadPoolExecutor(max_workers=self.poller.pool._max_workers) as pool:
            results = list(pool.map(one, self.clients))
        self.call_from_thread(self._apply_audit, results)

    def _apply_audit(self, results: list[tuple[str, object]]) -> None:
        for host, got in results:
            if isinstance(got, str):
                self.audit_errors[host] = got
            else:
                self.audit_errors.pop(host, None)
                self.model.audit[host] = got  # type: ignore[assignment]
        self.tick()

    # -- navigation ------------------------------------------------------------

    def action_goto(self, mode: str) -> None:
        self.switch_mode(mode)

    def open_host(self, name: str) -> None:
        if name not in self.model.hosts:
            self.notify(f"no host {name!r} in the inventory", severity="error")
            return
        if self.current_mode != "fleet":
            self.switch_mode("fleet")
        while isinstance(self.screen, HostScreen):
            self.pop_screen()
        self.push_screen(HostScreen(name))

    def action_help(self) -> None:
        screen = self.screen
        keys = []
        for key, active in screen.active_bindings.items():
            b = active.binding
            if b.description:
                keys.append((self.get_key_display(b) or key, b.description, b.id or ""))
        # hadeck's own keys (remappable, with an id) first; the widgets' generic ones after.
        keys.sort(key=lambda k: not k[2])
        where = getattr(screen, "where", "") or type(screen).__name__
        self.push_screen(HelpScreen(where, keys))

    def action_command_line(self) -> None:
        completions = [*COMMANDS_HELP, *(f"host {h}" for h in self.model.hosts)]
        completions += [f"events host:{h}" for h in self.model.hosts]
        completions += [f"theme {t}" for t in self.available_themes]
        self.push_screen(CommandLine(completions, self.history), self._command_entered)

    def _command_entered(self, text: str | None) -> None:
        if text:
            self.history.append(text)
            self.run_command(text)

    def run_command(self, text: str) -> None:
        """`:` commands; unknown ones are told, not ignored."""
        word, _, rest = text.strip().partition(" ")
        rest = rest.strip()
        if word in ("fleet", "f"):
            self.switch_mode("fleet")
        elif word in ("events", "ev", "e"):
            self.switch_mode("events")
            if rest and isinstance(self.screen, EventsScreen):
                self.screen.set_query(rest)
        elif word in ("audit", "a"):
            self.switch_mode("audit")
        elif word in ("groups", "g"):
            self.switch_mode("groups")
        elif word in ("host", "h"):
            self.open_host(rest)
        elif word == "theme":
            if rest in self.available_themes:
                self.theme = rest
            else:
                self.notify(f"no theme {rest!r}", severity="error")
        elif word in ("help", "?"):
            self.action_help()
        elif word in ("quit", "q", "q!"):
            self.exit()
        else:
            self.notify(
                f"unknown command :{word} (try "
                f"{', '.join(':' + c.strip() for c in COMMANDS_HELP)})",
                severity="error",
            )

    # -- actions: one path for all ---------------------------------------------

    def request_action(self, plan: Plan) -> None:
        """Every action goes through here: read-only check, the agent's own plan, the
        confirmation, a worker, the result."""
        if self.read_only:
            self.notify(
                f"read-only console: {plan.title} is not allowed", severity="error", timeout=6
            )
            return
        state = self.model.hosts.get(plan.host)
        version = sent_api_version(state.status) if state and state.status else 0
        if plan.haproxy is not None:
            self._confirm(plan)
        elif version < DRY_RUN_SINCE:
            why = f"agent api_version {version}" if version else "not reached yet"
            self._confirm(actions.without_agent_plan(plan, why))
        else:
            # Said only when the agent is slow to answer: usually the dialog is there first.
            self._previews += 1
            slow = self.set_timer(
                0.7,
                lambda: self.notify(f"asking {plan.host} for its plan: {plan.title}", timeout=3),
            )
            self.preview(plan, self._previews, slow)

    @work(thread=True, group="previews")
    def preview(self, plan: Plan, seq: int, slow: Timer) -> None:
        """The agent's `dry_run` of the request, so the dialog shows its rules, not ours."""
        try:
            agent_plan = self.clients[plan.host].plan(
                plan.path, self.actor, PREVIEW_TIMEOUT, plan.body
            )
        except (AgentRefused, TransportError) as exc:
            self.call_from_thread(self._previewed, seq, slow, plan, str(exc))
            return
        self.call_from_thread(self._previewed, seq, slow, plan, agent_plan)

    def _previewed(self, seq: int, slow: Timer, plan: Plan, answer: AgentPlan | str) -> None:
        """Only the newest preview opens a dialog: a slow agent's late plan for an action
        the operator has moved on from (asked again, or asked another) is dropped."""
        slow.stop()
        if seq != self._previews:
            return
        if isinstance(answer, str):
            self._confirm(actions.without_agent_plan(plan, answer))
        elif answer.refusal is not None:
            self.notify(
                answer.refusal,
                title=f"{plan.title}: {plan.host}'s agent would refuse",
                severity="error",
                timeout=12,
            )
        else:
            self._confirm(actions.with_agent_plan(plan, answer))

    def _confirm(self, plan: Plan) -> None:
        def confirmed(reason: str | None) -> None:
            if reason is None:
                self.notify(f"cancelled: {plan.title}", timeout=3)
            else:
                self.notify(f"running: {plan.title}", timeout=3)
                self.execute(plan, reason)

        self.push_screen(ConfirmAction(plan), confirmed)

    @work(thread=True, group="actions")
    def execute(self, plan: Plan, reason: str) -> None:
        client = self.clients[plan.host]
        outcome = actions.execute(client, plan, self.actor, reason)
        self.call_from_thread(self._finished, outcome)

    def _finished(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.notify(
            outcome.message,
            title=f"{outcome.plan.title}: {'done' if outcome.ok else 'FAILED'}",
            severity="information" if outcome.ok else "error",
            timeout=10,
        )
        self.poller.poll_now(outcome.plan.host)


def default_keymap_path() -> Path:
    return settings.config_dir() / "keymap.yaml"


def known_binding_ids() -> set[str]:
    from console.screens.pick import Pick
    from console.widgets.command_line import CommandLine as Cl

    ids = set()
    for cls in (
        HadeckApp, FleetScreen, HostScreen, EventsScreen, AuditScreen, GroupsScreen, HelpScreen,
        ConfirmAction, GroupHistory, Cl, Pick,
    ):  # fmt: skip
        for b in cls.BINDINGS:
            if isinstance(b, Binding) and b.id:
                ids.add(b.id)
    return ids


__all__ = ["HadeckApp", "default_keymap_path", "known_binding_ids"]
