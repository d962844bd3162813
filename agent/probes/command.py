"""Command probe: a configured argv exits with the expected code (and prints what is expected).

`stdout_regex` looks at stdout only (its last 16 KiB): a warning on stderr neither makes
nor breaks a match. A failure's detail ends with the last line the command printed,
stderr's if it wrote any.
"""

from __future__ import annotations

import re

from agent import commands
from agent.config import CommandProbe
from agent.probes.base import Outcome, Probe


class CommandCheck(Probe):
    kind = "command"

    def __init__(self, cfg: CommandProbe) -> None:
        self.cfg = cfg
        self.stdout = re.compile(cfg.stdout_regex) if cfg.stdout_regex else None

    async def check(self) -> Outcome:
        result = await commands.run(self.cfg.command, self.cfg.timeout)
        if result.timed_out or result.error:
            return Outcome(False, result.summary())
        if result.exit_code != self.cfg.expect_exit:
            return Outcome(
                False,
                f"exit {result.exit_code}, expected {self.cfg.expect_exit}" + _tail(result.output),
            )
        if self.stdout is not None and not self.stdout.search(result.stdout):
            return Outcome(
                False, f"stdout does not match {self.cfg.stdout_regex!r}" + _tail(result.stdout)
            )
        return Outcome(True, result.summary())


def _tail(output: str) -> str:
    last = output.strip().splitlines()[-1:] if output.strip() else []
    return f": {last[0][:200]}" if last else ""
