"""Groups: every HA group's members with role, health and lag, and who holds the lease.

One row per member, the primary first; above the table, one summary per group (leader,
fencing token, lease time left, paused, pending request, last handover). The keys act on the
highlighted member's group through the one confirmation flow, sent to that member's agent
(any member's agent takes a group request); drain and ready go to HAProxy instead.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from console import actions
from console.actions import Plan
from console.fleet import GroupMemberView, GroupView, age
from console.screens.base import HadeckScreen
from console.screens.group_history import GroupHistory
from console.theming import severity_style
from console.widgets.titlebar import TitleBar

COLUMNS = ("group", "member", "host", "role", "routed", "healthy", "lag", "priority", "note")
#: Actions that change something: greyed out in a read-only console.
CHANGES = frozenset({"switchover", "failover", "pause", "resume", "drain", "ready"})


def role_severity(m: GroupMemberView) -> str:
    """The theme colour of a member's role: an unhealthy member is an error whatever its
    role; the primary is fine; a member changing role deserves a look."""
    if not m.healthy:
        return "down"
    if m.role == "primary":
        return "ok"
    if m.role in ("promoting", "demoting"):
        return "warning"
    return "info"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _yes(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "no"


class GroupsScreen(HadeckScreen):
    where = "groups"
    BINDINGS = [
        Binding("s", "switchover", "Switchover", id="groups.switchover"),
        Binding("F", "failover", "Failover", id="groups.failover"),
        Binding("p", "pause", "Pause", id="groups.pause"),
        Binding("u", "resume", "Resume", id="groups.resume"),
        Binding("d", "drain", "Drain", id="groups.drain"),
        Binding("r", "ready", "Ready", id="groups.ready"),
        Binding("h", "history", "History", id="groups.history"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.views: dict[str, GroupView] = {}
        self.shown: list[str] = []
        self.cells: dict[str, tuple[str, ...]] = {}

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield Static(id="group-summary")
        yield DataTable(id="members", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table: DataTable[str | Text] = self.query_one(DataTable)
        table.border_title = "members"
        for c in COLUMNS:
            table.add_column(c.upper(), key=c)
        self.query_one("#group-summary", Static).border_title = "groups"
        table.focus()
        self.refresh_view()

    # -- view ------------------------------------------------------------------

    def refresh_view(self) -> None:
        now = self.hadeck.clock()
        views = self.model.groups(now)
        self.views = {v.name: v for v in views}
        members = sum(len(v.members) for v in views)
        theme = self.app.current_theme
        # What needs the operator, by group name, in the theme's colours.
        flagged = {
            ("down", "no primary"): [v.name for v in views if v.leader is None],
            ("down", "lease store error"): [v.name for v in views if v.status.store_error],
            ("warning", "paused"): [v.name for v in views if v.paused],
        }
        counts = "  ".join(
            f"[{severity_style(theme, severity)}]{what}: {', '.join(names)}[/]"
            for (severity, what), names in flagged.items()
            if names
        )
        self.query_one(TitleBar).show(
            f"groups  {_count(len(views), 'group')}, {_count(members, 'member')}",
            self.hadeck.environment,
            counts,
            self.hadeck.read_only,
        )
        self.query_one("#group-summary", Static).update(self.summary(views, now))
        self.update_table([m for v in views for m in v.members], now)

    def summary(self, views: list[GroupView], now: float) -> Text:
        theme = self.app.current_theme
        warn, bad = severity_style(theme, "warning"), severity_style(theme, "down")
        out = Text()
        if not views:
            out.append("No agent reports an HA group (`groups:` in an agent's config).")
            return out
        for i, v in enumerate(views):
            if i:
                out.append("\n")
            out.append(v.name, style=f"bold {theme.primary}")
            if v.leader is None:
                out.append("  no primary holds the lease", style=bad)
            else:
                out.append(f"  leader {v.leader}  token {v.token}")
                left = v.lease_ttl_left
                out.append(f"  lease {'-' if left is None else f'{left:.1f}s'} left")
            if v.paused:
                out.append("  PAUSED: no automatic failover", style=warn)
            else:
                out.append("  automatic failover on")
            if not v.fresh:
                out.append(f"  (as last reported by {v.reported_by})", style=warn)
            if v.status.store_error:
                out.append(f"\n  lease store: {v.status.store_error}", style=bad)
            if v.status.failsafe:  # the reporting member's own words (docs/failover.md)
                out.append(f"\n  failsafe: {v.status.failsafe}", style=warn)
            if v.request:
                r = v.request
                out.append(
                    f"\n  pending {r.get('kind')} to {r.get('to') or 'the best standby'}"
                    f" asked by {r.get('actor')}",
                    style=warn,
                )
            h = v.last_handover
            if h is None:
                out.append("\n  no handover yet")
            else:
                out.append(
                    f"\n  last handover {age(now - h.at)} ago: {h.kind} "
                    f"{h.from_member or 'none'} → {h.to_member} by {h.actor}"
                    + (f": {h.reason}" if h.reason else "")
                )
        return out

    def update_table(self, members: list[GroupMemberView], now: float) -> None:
        """Update cells by row key; rebuild only when the order changes (a handover)."""
        table: DataTable[str | Text] = self.query_one(DataTable)
        theme = self.app.current_theme
        bad = severity_style(theme, "down")
        order = [m.key for m in members]
        reorder = order != self.shown
        cursor = self.selected_key() if reorder else None
        with self.app.batch_update():
            if reorder:
                table.clear()
                self.cells.clear()
            for m in members:
                host = m.host or "-"
                heard = m.host is None or m.connection == "live"
                if not heard and m.host is not None:
                    host += f" ({self.model.hosts[m.host].badge(now, self.model.stale_after)})"
                values = (
                    m.group, m.member, host, m.role, _yes(m.routed), _yes(m.healthy),
                    "-" if m.lag is None else f"{m.lag:.1f}s", str(m.priority), m.note,
                    role_severity(m),
                )  # fmt: skip
                old = self.cells.get(m.key)
                if old == values:
                    continue
                cells: list[str | Text] = [
                    m.group,
                    Text(m.member, style="bold"),
                    Text(host, style="" if heard else severity_style(theme, "stale")),
                    Text(m.role, style=severity_style(theme, role_severity(m))),
                    values[4],
                    Text(values[5], style=bad if not m.healthy else ""),
                    values[6],
                    values[7],
                    Text(m.note, style=severity_style(theme, "warning"))
                    if m.note != "eligible"
                    else m.note,
                ]
                if old is None:
                    table.add_row(*cells, key=m.key)
                else:
                    for col, cell, new, before in zip(COLUMNS, cells, values, old, strict=False):
                        if new != before or col == "role":
                            table.update_cell(m.key, col, cell, update_width=True)
                self.cells[m.key] = values
            if reorder:
                self.shown = order
                if cursor in order:
                    table.move_cursor(row=order.index(cursor), animate=False)

    # -- selection -------------------------------------------------------------

    def selected_key(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def selected(self) -> tuple[GroupView, GroupMemberView] | None:
        key = self.selected_key()
        if key is None:
            return None
        group, _, member = key.partition("/")
        view = self.views.get(group)
        m = view.member(member) if view else None
        return (view, m) if view and m else None

    # -- actions ---------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """In a read-only console the action keys show, greyed out, and do nothing."""
        if action in CHANGES and self.hadeck.read_only:
            return None
        return True

    def _act(self, build: str) -> None:
        picked = self.selected()
        if picked is None:
            self.notify("No HA group member selected.", severity="warning")
            return
        view, m = picked
        # Any member's agent takes a group request: the highlighted member's, if heard.
        host = m.host or view.reported_by
        gs = view.status
        plan: Plan
        try:
            if build == "switchover":
                plan = actions.switchover(host, gs, None if m.member == gs.leader else m.member)
            elif build == "failover":
                plan = actions.failover(host, gs, m.member)
            elif build == "pause":
                plan = actions.pause(host, gs)
            elif build == "resume":
                plan = actions.resume(host, gs)
            elif build == "drain":
                plan = actions.drain(host, gs, m.member, self.hadeck.haproxy)
            else:
                plan = actions.ready(host, gs, m.member, self.hadeck.haproxy)
        except ValueError as exc:
            self.notify(str(exc), severity="warning", timeout=10)
            return
        self.hadeck.request_action(plan)

    def action_switchover(self) -> None:
        self._act("switchover")

    def action_failover(self) -> None:
        self._act("failover")

    def action_pause(self) -> None:
        self._act("pause")

    def action_resume(self) -> None:
        self._act("resume")

    def action_drain(self) -> None:
        self._act("drain")

    def action_ready(self) -> None:
        self._act("ready")

    def action_history(self) -> None:
        picked = self.selected()
        if picked is None:
            self.notify("No HA group member selected.", severity="warning")
            return
        view, m = picked
        hosts = [m.host] if m.host else []
        hosts += [h for h in view.hosts() if h not in hosts]
        self.app.push_screen(GroupHistory(view.name, hosts))
