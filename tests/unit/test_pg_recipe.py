"""deploy/recipes/postgresql/hadeck-pg without a server: its config errors and its
arithmetic (the integration tests drive the rest against real PostgreSQL)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.postgres import RECIPE, load_recipe


@pytest.fixture(scope="module")
def pg() -> ModuleType:
    return load_recipe()


GOOD = """
member = "db-1"
data = "/var/lib/postgresql/15/main"
[members.db-1]
host = "10.0.0.1"
[members.db-2]
host = "10.0.0.2"
port = 5433
"""


def test_the_example_config_loads(pg: ModuleType) -> None:
    s = pg.load(RECIPE.parent / "pg.toml")
    assert s.member == "db-1" and set(s.servers) == {"db-1", "db-2", "db-3"}
    assert s.synchronous is True


def test_defaults_and_ports(pg: ModuleType, tmp_path: Path) -> None:
    f = tmp_path / "pg.toml"
    f.write_text(GOOD)
    s = pg.load(f)
    assert s.servers["db-1"].port == 5432 and s.servers["db-2"].port == 5433
    assert s.config_file is None and s.synchronous is False
    assert s.state == Path("/var/lib/postgresql/15/hadeck-pg-db-1.json")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (GOOD.replace('member = "db-1"', 'member = "db-9"'), "`member` 'db-9'"),
        (GOOD.replace('data = "/var/lib/postgresql/15/main"\n', ""), "`data`"),
        (GOOD.replace("port = 5433", 'port = "5433"'), "members.db-2.port"),
        (GOOD.replace('host = "10.0.0.2"', ""), "members.db-2"),
        ("member = ", "Invalid value"),
        (GOOD.replace("port = 5433", "prot = 5433"), "members.db-2: unknown key `prot`"),
        ("synchronus = true\n" + GOOD, "unknown key `synchronus`"),
        (GOOD.replace('data = "', 'sight_max_age = true\ndata = "'), "`sight_max_age`"),
    ],
)
def test_a_config_error_names_the_file_and_field(text: str, field: str, tmp_path: Path) -> None:
    f = tmp_path / "pg.toml"
    f.write_text(text)
    done = subprocess.run(
        [sys.executable, str(RECIPE), "--config", str(f), "lag"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"hadeck-pg lag: {f}: ") and field in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_wal_positions_compare_as_numbers(pg: ModuleType) -> None:
    assert pg.lsn("0/3000060") == 0x3000060
    assert pg.lsn("1/0") - pg.lsn("0/FFFFFFFF") == 1


def test_conninfo_values_are_quoted(pg: ModuleType, tmp_path: Path) -> None:
    f = tmp_path / "pg.toml"
    f.write_text(GOOD.replace('data = "', 'user = "o\'brien x"\ndata = "'))
    s = pg.load(f)
    info = s.conninfo(s.servers["db-2"])
    assert "user='o\\'brien x'" in info and "port=5433" in info
