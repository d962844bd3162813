"""The command palette (ctrl+p): every navigation and action, searchable by name.

Actions found here go through the same confirmation as their keys do.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

from console import actions

if TYPE_CHECKING:
    from console.app import HadeckApp


class HadeckCommands(Provider):
    def commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app: HadeckApp = self.app  # type: ignore[assignment]
        out: list[tuple[str, Callable[[], object], str]] = [
            ("Go to fleet", partial(app.run_command, "fleet"), "all hosts"),
            ("Go to events", partial(app.run_command, "events"), "the fleet's timeline"),
            ("Go to audit", partial(app.run_command, "audit"), "actions taken"),
        ]
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

    async def discover(self) -> Hits:
        for text, callback, help_text in self.commands():
            yield DiscoveryHit(text, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, callback, help_text in self.commands():
            if (score := matcher.match(text)) > 0:
                yield Hit(score, matcher.highlight(text), callback, help=help_text)
