"""The command palette (ctrl+p): every navigation and action, searchable by name.

Actions found here go through the same confirmation as their keys do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from console import actions
from console.screens.group_history import GroupHistory

if TYPE_CHECKING:
    from console.app import HadeckApp


class HadeckCommands(Provider):
    def commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app: HadeckApp = self.app  # type: ignore[assignment]
        out: list[tuple[str, Callable[[], object], str]] = [
            ("Go to fleet", partial(app.run_command, "fleet"), "all hosts"),
            ("Go to events", partial(app.run_command, "events"), "the fleet's timeline"),
            ("Go to audit", partial(app.run_command, "audit"), "actions taken"),
            ("Go to groups", partial(app.run_command, "groups"), "HA groups and their members"),
        ]
        out += self.group_commands(app)
        for name, h in sorted(app.model.hosts.items()):
            out.append((f"Open host {name}", partial(app.open_host, name), h.via))
            if h.status is None:
                continue
            for s in h.status.services:
                if s.restartable:
                    plan = actions.restart(name, s)
                    out.append(
                        (f"Restart {s.name} on {name}", partial(app.request_action, plan), "")
                    )
            for p in h.status.probes:
                plan = actions.run_probe(name, p)
                out.append((f"Run probe {p.name} on {name}", partial(app.request_action, plan), ""))
            for b in h.status.runbooks:
                plan = actions.run_runbook(name, b)
                out.append(
                    (f"Run runbook {b.name} on {name}", partial(app.request_action, plan), "")
                )
        return out

    def group_commands(self, app: HadeckApp) -> list[tuple[str, Callable[[], object], str]]:
        """Per HA group: switchover (to the best standby, and to each standby), forced
        failover to each standby, pause or resume, and the handover history; each sent to
        the agent that reported the group."""
        out: list[tuple[str, Callable[[], object], str]] = []
        for view in app.model.groups(app.clock()):
            g, gs, host = view.name, view.status, view.reported_by
            plans = [actions.switchover(host, gs, None)]
            for m in view.members:
                if m.member != gs.leader:
                    plans.append(actions.switchover(host, gs, m.member))
                    plans.append(actions.failover(host, gs, m.member))
            plans.append(actions.resume(host, gs) if gs.paused else actions.pause(host, gs))
            for plan in plans:
                title = plan.title[:1].upper() + plan.title[1:]
                out.append((title, partial(app.request_action, plan), f"via {host}"))
            out.append(
                (
                    f"Handover history of {g}",
                    partial(_open_history, app, g, view.hosts()),
                    f"from {host}",
                )
            )
        return out

    async def discover(self) -> Hits:
        for text, callback, help_text in self.commands():
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, callback, help_text in self.commands():
            if (score := matcher.match(text)) > 0:
                yield Hit(score, matcher.highlight(text), callback, help=help_text)


def _open_history(app: HadeckApp, group: str, hosts: list[str]) -> None:
    app.push_screen(GroupHistory(group, hosts))
