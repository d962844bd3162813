"""A lag command's answer: what ranks standbys, so what it cannot be matters as much."""

from __future__ import annotations

import pytest

from agent import commands
from agent.failover.member import parse_lag


@pytest.mark.parametrize(
    ("stdout", "lag"), [("0\n", 0.0), ("16384 bytes\n", 16384.0), (" 2.5", 2.5)]
)
def test_the_first_word_of_stdout_is_the_lag(stdout: str, lag: float) -> None:
    assert parse_lag(stdout) == lag


@pytest.mark.parametrize("stdout", ["", "\n", "lag: 7", "nan", "inf", "-inf", "-1", "1e999"])
def test_what_is_not_a_finite_lag_is_refused(stdout: str) -> None:
    with pytest.raises(ValueError):
        parse_lag(stdout)


async def test_a_number_on_stderr_is_not_a_lag() -> None:
    # Found from outside: `sh -c 'echo 7 >&2'` was read as a lag of 7 (merged output).
    result = await commands.run(["sh", "-c", "echo 7 >&2"], 5.0)
    assert result.ok
    with pytest.raises(ValueError, match="nothing on stdout"):
        parse_lag(result.stdout)
