"""Audit: every action taken through hadeck (and every automatic recovery), from the agents'
hash-chained audit logs, newest first. Fetched when shown and on refresh, not polled."""

from __future__ import annotations

import json

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer

from console.format import stamp
from console.screens.base import HadeckScreen
from console.theming import severity_style
from console.widgets.titlebar import TitleBar


class AuditScreen(HadeckScreen):
    where = "audit"
    BINDINGS = [Binding("R", "reload", "Reload", id="audit.reload")]

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[str] = []

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield DataTable(id="audit", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table: DataTable[str | Text] = self.query_one(DataTable)
        for c in ("time", "host", "actor", "action", "target", "result", "reason / detail"):
            table.add_column(c.upper(), key=c)
        table.focus()
        self.action_reload()

    def on_screen_resume(self) -> None:
        self.action_reload()

    def action_reload(self) -> None:
        self.hadeck.fetch_audit()

    def refresh_view(self) -> None:
        records = self.model.merged_audit()
        errors = self.hadeck.audit_errors
        self.query_one(TitleBar).show(
            f"audit  {len(records)} records"
            + (f"  ({len(errors)} hosts unreachable)" if errors else ""),
            self.hadeck.environment,
            read_only=self.hadeck.read_only,
        )
        keys = [f"{h}/{r.seq}" for h, r in records]
        if keys == self.shown:
            return
        self.shown = keys
        theme = self.app.current_theme
        table: DataTable[str | Text] = self.query_one(DataTable)
        with self.app.batch_update():
            table.clear()
            for (h, r), key in zip(records, keys, strict=True):
                ok = r.result.get("ok")
                reason = r.params.get("reason") or r.result.get("message") or ""
                table.add_row(
                    stamp(r.ts),
                    h,
                    r.actor,
                    r.action,
                    r.target,
                    Text(
                        "ok" if ok else "failed" if ok is False else json.dumps(r.result)[:20],
                        style=severity_style(theme, "ok" if ok else "down"),
                    ),
                    str(reason)[:120],
                    key=key,
                )
