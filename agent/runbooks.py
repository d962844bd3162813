"""Named runbooks: configured command sequences, run in order, stopping at the first failure."""

from __future__ import annotations

from agent import commands
from agent.commands import CommandResult
from agent.config import CommandStep


async def run_steps(steps: list[CommandStep]) -> list[CommandResult]:
    results: list[CommandResult] = []
    for step in steps:
        result = await commands.run(step.command, step.timeout)
        results.append(result)
        if not result.ok:
            break
    return results
