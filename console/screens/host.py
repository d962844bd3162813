"""Host: services and probes with state, evidence, latency sparklines, recovery, events.

The evidence panel answers "why is this down?" for whichever service or probe
the cursor is on: the event of its last change, with the results that caused it.
"""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Static

from agent.schema import Event, HostStatus
from console import actions
from console.fleet import age
from console.format import clock, size, sparkline
from console.screens.base import HadeckScreen
from console.theming import severity_style
from console.widgets.titlebar import TitleBar


class HostScreen(HadeckScreen):
    BINDINGS = [
        Binding("r", "restart", "Restart service", id="host.restart"),
        Binding("p", "run_probe", "Run probe", id="host.run_probe"),
        Binding("b", "runbook", "Runbook", id="host.runbook"),
        Binding("escape", "back", "Back", id="host.back"),
    ]

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host
        self.where = f"host {host}"
        self.focus_name: tuple[str, str] | None = None

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield Static(id="summary")
        with Horizontal(id="tables"):
            with Vertical(id="left"):
                yield DataTable(id="services", cursor_type="row")
                yield DataTable(id="probes", cursor_type="row")
            yield Static(id="evidence")
        yield DataTable(id="host-events", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        s: DataTable[str | Text] = self.query_one("#services", DataTable)
        s.border_title = "services"
        for c in ("service", "state", "since", "recovery", "attempts", "depends on"):
            s.add_column(c.upper(), key=c)
        p: DataTable[str | Text] = self.query_one("#probes", DataTable)
        p.border_title = "probes"
        for c in ("probe", "kind", "state", "latency", "recent", "target", "last result"):
            p.add_column(c.upper(), key=c)
        e: DataTable[str | Text] = self.query_one("#host-events", DataTable)
        e.border_title = "recent events"
        for c in ("time", "severity", "what", "message"):
            e.add_column(c.upper(), key=c)
        self.query_one("#evidence", Static).border_title = "evidence"
        s.focus()
        # This host's polls now bring full answers (latency history for the sparklines).
        self.hadeck.poller.detail = self.host
        self.hadeck.poller.poll_now(self.host)
        self.refresh_view()

    def on_unmount(self) -> None:
        if self.hadeck.poller.detail == self.host:
            self.hadeck.poller.detail = None

    # -- view ------------------------------------------------------------------

    @property
    def status(self) -> HostStatus | None:
        h = self.model.hosts.get(self.host)
        return h.status if h else None

    def refresh_view(self) -> None:
        h = self.model.hosts.get(self.host)
        if h is None:
            return
        now = self.hadeck.clock()
        badge = h.badge(now, self.model.stale_after)
        self.query_one(TitleBar).show(
            f"host {self.host}  [{badge}]  via {h.via}",
            self.hadeck.environment,
            read_only=self.hadeck.read_only,
        )
        st = h.status
        theme = self.app.current_theme
        summary = Text()
        if h.error:
            summary.append(f"{h.error}\n", style=severity_style(theme, "down"))
        if st is not None:
            r = st.resources
            disks = "  ".join(
                f"{d.mount} {d.used_ratio * 100:.0f}% ({size(d.free_bytes)} free)" for d in r.disks
            )
            summary.append(
                f"agent {st.version}  up {age(st.uptime_seconds)}  "
                f"cpu {_pct(r.cpu_ratio)}  load {'-' if r.load1 is None else f'{r.load1:.2f}'}  "
                f"mem {_pct(r.memory_used_ratio)} of {size(r.memory_total_bytes)}  {disks}"
            )
        self.query_one("#summary", Static).update(summary)
        if st is None:
            return
        self._services(st, now)
        self._probes(st)
        self._events()
        self._evidence()

    def _fill(self, table: DataTable[str | Text], rows: dict[str, list[str | Text]]) -> None:
        with self.app.batch_update():
            for key in [str(k.value) for k in table.rows if k.value not in rows]:
                table.remove_row(key)
            existing = {k.value for k in table.rows}
            for key, cells in rows.items():
                if key in existing:
                    for col, cell in zip(table.columns, cells, strict=False):
                        table.update_cell(key, col, cell, update_width=True)
                else:
                    table.add_row(*cells, key=key)

    def _services(self, st: HostStatus, now: float) -> None:
        theme = self.app.current_theme
        rows: dict[str, list[str | Text]] = {}
        for s in st.services:
            rec = s.recovery
            state = "flapping" if s.flapping and s.state != "down" else s.state
            rec_text = "-" if rec is None else rec.state + (f": {rec.reason}" if rec.reason else "")
            rows[s.name] = [
                Text(s.name, style="bold"),
                Text(state, style=severity_style(theme, state)),
                age(now - s.since) if s.since else "-",
                Text(rec_text, style=severity_style(theme, rec.state) if rec else ""),
                f"{rec.attempts_in_window}/{rec.max_attempts}" if rec else "-",
                ", ".join(s.depends_on) or "-",
            ]
        self._fill(self.query_one("#services", DataTable), rows)

    def _probes(self, st: HostStatus) -> None:
        theme = self.app.current_theme
        rows: dict[str, list[str | Text]] = {}
        for p in st.probes:
            state = "flapping" if p.flapping and p.state != "down" else p.state
            latencies = [r.latency_seconds if r.ok else -1.0 for r in p.recent]
            rows[p.name] = [
                Text(p.name, style="bold"),
                p.kind,
                Text(state, style=severity_style(theme, state)),
                f"{p.last.latency_seconds * 1000:.0f} ms" if p.last else "-",
                sparkline(latencies),
                p.target,
                (p.last.detail[:60] if p.last else "-"),
            ]
        self._fill(self.query_one("#probes", DataTable), rows)

    def host_events(self) -> list[Event]:
        return [e for _, e in self.model.merged_events(host=self.host)][:200]

    def _events(self) -> None:
        theme = self.app.current_theme
        rows: dict[str, list[str | Text]] = {}
        for e in self.host_events()[:50]:
            rows[str(e.id)] = [
                clock(e.ts),
                Text(e.severity, style=severity_style(theme, e.severity)),
                e.service or e.probe or "-",
                e.message,
            ]
        table: DataTable[str | Text] = self.query_one("#host-events", DataTable)
        if [str(k.value) for k in table.rows] != list(rows):
            table.clear()
            for key, cells in rows.items():
                table.add_row(*cells, key=key)

    def _evidence(self) -> None:
        """The last change of the highlighted service or probe, and what caused it."""
        st = self.status
        panel = self.query_one("#evidence", Static)
        if st is None or self.focus_name is None:
            panel.update("Move the cursor to a service or probe to see why it is in its state.")
            return
        kind, name = self.focus_name
        event = next(
            (
                e
                for e in self.host_events()
                if (e.service if kind == "service" else e.probe) == name
            ),
            None,
        )
        out = Text()
        out.append(f"{kind} {name}\n", style="bold")
        if event is None:
            out.append("no state change seen since the console started\n")
        else:
            out.append(f"{clock(event.ts)} {event.message}\n")
            out.append(json.dumps(event.evidence, indent=1, default=str)[:1500] + "\n")
        if kind == "probe":
            probe = next((p for p in st.probes if p.name == name), None)
            if probe is not None and probe.recent:
                out.append("\nlast results\n", style="bold")
                for r in probe.recent[-6:]:
                    mark = "ok  " if r.ok else "FAIL"
                    out.append(
                        f"{clock(r.ts)} {mark} {r.latency_seconds * 1000:.0f} ms  {r.detail[:60]}\n"
                    )
        if kind == "service":
            svc = next((s for s in st.services if s.name == name), None)
            if svc is not None:
                states = {p.name: p.state for p in st.probes}
                out.append(
                    "\nprobes: " + ", ".join(f"{p} {states.get(p, '?')}" for p in svc.probes)
                )
                out.append("\n")
            if svc and svc.recovery and svc.recovery.history:
                out.append("\nrecovery history\n", style="bold")
                for a in svc.recovery.history[-8:]:
                    out.append(f"{clock(a.ts)} {a.step} {a.result} ({a.duration_seconds:.1f}s)\n")
        panel.update(out)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        table_id = event.data_table.id
        # Evidence follows the table the operator is in, not the last one to be filled.
        if not event.data_table.has_focus:
            return
        if table_id in ("services", "probes") and event.row_key.value is not None:
            self.focus_name = (
                "service" if table_id == "services" else "probe",
                event.row_key.value,
            )
            self._evidence()

    def on_descendant_focus(self, event: object) -> None:
        focused = self.focused
        if not (isinstance(focused, DataTable) and focused.id in ("services", "probes")):
            return
        if (name := self._highlighted(focused.id)) is not None:
            self.focus_name = ("service" if focused.id == "services" else "probe", name)
            self._evidence()

    # -- actions ---------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """In a read-only console the action keys show, greyed out, and do nothing."""
        if action in ("restart", "run_probe", "runbook") and self.hadeck.read_only:
            return None
        return True

    def _highlighted(self, table_id: str) -> str | None:
        table = self.query_one(f"#{table_id}", DataTable)
        if table.row_count == 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_restart(self) -> None:
        st, name = self.status, self._highlighted("services")
        svc = next((s for s in st.services if s.name == name), None) if st else None
        if svc is None:
            self.notify("Select a service first (Tab moves between tables).", severity="warning")
            return
        try:
            plan = actions.restart(self.host, svc)
        except ValueError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.hadeck.request_action(plan)

    def action_run_probe(self) -> None:
        st, name = self.status, self._highlighted("probes")
        probe = next((p for p in st.probes if p.name == name), None) if st else None
        if probe is None:
            self.notify("Select a probe first (Tab moves between tables).", severity="warning")
            return
        self.hadeck.request_action(actions.run_probe(self.host, probe))

    def action_runbook(self) -> None:
        st = self.status
        if st is None or not st.runbooks:
            self.notify(f"{self.host} has no runbooks in its config.", severity="warning")
            return
        from console.screens.pick import Pick

        def chosen(name: str | None) -> None:
            book = next((b for b in st.runbooks if b.name == name), None)
            if book is not None:
                self.hadeck.request_action(actions.run_runbook(self.host, book))

        self.app.push_screen(
            Pick(f"Runbooks on {self.host}", [(b.name, b.description) for b in st.runbooks]),
            chosen,
        )

    def action_back(self) -> None:
        self.app.pop_screen()


def _pct(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.0f}%"
