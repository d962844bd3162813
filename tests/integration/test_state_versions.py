"""The real agent opens the state database its earlier versions left, with their history,
and refuses, untouched, one that a newer agent wrote."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.store import MIGRATIONS, Store
from tests.support.agent import AgentProcess
from tests.unit.test_store import EARLIER_VERSIONS, FIRST_RELEASES_SCHEMA

pytestmark = pytest.mark.integration


def test_an_agent_started_on_a_first_release_database_keeps_its_history(tmp_path, start_agent):
    state = tmp_path / "a" / "state"
    state.mkdir(parents=True)
    EARLIER_VERSIONS[0](state / "state.db")
    agent = start_agent({"agent": {"state_dir": str(state)}})
    kinds = [e["kind"] for e in agent.events()]
    assert kinds[0] == "service_down" and "agent_started" in kinds
    assert agent.stop() == 0
    db = sqlite3.connect(state / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    # Supervision's tables, made by the first releases' schema, are adopted as they are.
    versions = dict(db.execute("SELECT name, version FROM table_versions").fetchall())
    assert versions["probe_results"] == 1 and versions["recovery_attempts"] == 1
    assert db.execute("SELECT result FROM recovery_attempts").fetchall() == [("interrupted",)]


def _refused_start(agent: AgentProcess) -> str:
    """The agent's one line on a start it refuses (exit 1, no traceback)."""
    run = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(agent.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    [line] = [x for x in run.stderr.splitlines() if x.startswith("hadeck-agent: ")]
    return line


def test_an_agent_refuses_a_database_from_a_newer_agent_and_leaves_it(tmp_path):
    agent = AgentProcess(tmp_path, {})
    agent.state_dir.mkdir(parents=True)
    path = agent.state_dir / "state.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(FIRST_RELEASES_SCHEMA)
    db.execute("PRAGMA user_version = 99")
    db.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    line = _refused_start(agent)
    assert str(path) in line and "version 99" in line and f"up to {len(MIGRATIONS)}" in line
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == before


@pytest.mark.parametrize("table", ["probe_results", "recovery_attempts", "operations"])
def test_an_agent_refuses_a_subsystems_table_from_a_newer_agent(tmp_path, table):
    """A table a subsystem registers carries its own version: one a newer agent moved on
    stops the start with the file and the table named, not a traceback."""
    agent = AgentProcess(tmp_path, {})
    agent.state_dir.mkdir(parents=True)
    path = agent.state_dir / "state.db"
    Store(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(FIRST_RELEASES_SCHEMA)
    db.execute("INSERT INTO table_versions (name, version) VALUES (?, 99)", (table,))
    db.close()
    line = _refused_start(agent)
    assert str(path) in line and f"table {table} is at version 99" in line, line
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM table_versions WHERE name = ?", (table,)).fetchone() == (
        99,
    )
