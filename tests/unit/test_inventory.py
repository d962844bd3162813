"""The inventory is validated like the agent config: every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError
from console import inventory
from console.cli import main


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "inventory.yaml"
    p.write_text(text)
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        inventory.load(path)
    return [str(p) for p in err.value.problems]


def test_a_full_inventory_loads_with_defaults(tmp_path: Path) -> None:
    inv = inventory.load(
        write(
            tmp_path,
            """
environment: production
hosts:
  db-1:
    labels: {role: db}
    ssh: {address: 10.0.0.5, user: ops, jump: {address: bastion.example, user: ops}}
  local-1:
    local: {url: "http://127.0.0.1:9440", token_file: /var/lib/hadeck/token}
""",
        )
    )
    assert inv.environment == "production"
    db = inv.hosts["db-1"]
    assert db.ssh is not None and db.ssh.port == 22 and db.agent_port == 9440
    assert db.ssh.jump is not None and db.ssh.jump.address == "bastion.example"
    assert str(db.ssh.token_file) == "/var/lib/hadeck/token"
    assert inv.polling.stale_after == 10.0


def test_each_mistake_names_file_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
hosts:
  a:
    ssh: {adress: 10.0.0.5}
  b: {}
  c:
    local: {url: "ftp://x"}
  d:
    ssh: {address: x, port: 70000}
polling: {interval: soon}
""",
    )
    lines = problems(path)
    f = str(path)
    assert f"{f}: hosts.a.ssh.adress: unknown key" in lines
    assert f"{f}: hosts.a.ssh.address: required field is missing" in lines
    assert f"{f}: hosts.b: give exactly one of `ssh` or `local`" in lines
    assert any(line.startswith(f"{f}: hosts.c.local: url must start with http") for line in lines)
    assert any(line.startswith(f"{f}: hosts.d.ssh.port:") for line in lines)
    assert any(line.startswith(f"{f}: polling.interval: expected a duration") for line in lines)


def test_unreadable_and_invalid_yaml_and_empty(tmp_path: Path) -> None:
    assert problems(tmp_path / "missing.yaml") == [
        f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"
    ]
    assert problems(write(tmp_path, "hosts: [\n")) == [
        f"{tmp_path / 'inventory.yaml'}: invalid YAML: line 2, column 1: "
        "expected the node content, but found '<stream end>'"
    ]
    assert problems(write(tmp_path, "")) == [
        f"{tmp_path / 'inventory.yaml'}: the top level must be a mapping with `hosts`"
    ]


def test_check_inventory_exits_2_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "hosts:\n  a: {}\n")
    assert main(["check-inventory", str(path)]) == 2
    assert (
        capsys.readouterr().err.strip() == f"{path}: hosts.a: give exactly one of `ssh` or `local`"
    )
    ok = write(tmp_path, "hosts:\n  a: {local: {url: 'http://127.0.0.1:1'}}\n")
    assert main(["check-inventory", str(ok), "--json"]) == 0
    assert '"ok": true' in capsys.readouterr().out


def test_an_haproxy_section_maps_groups_to_backends(tmp_path: Path) -> None:
    hosts = 'hosts:\n  db-1:\n    local: {url: "http://127.0.0.1:9440"}\n'
    inv = inventory.load(
        write(
            tmp_path,
            hosts + "haproxy: {socket: /run/haproxy/admin.sock, backends: {pg: pg_primary}}\n",
        )
    )
    assert inv.haproxy is not None and inv.haproxy.backends == {"pg": "pg_primary"}
    assert str(inv.haproxy.socket) == "/run/haproxy/admin.sock" and inv.haproxy.timeout == 3.0
    assert inventory.load(write(tmp_path, hosts)).haproxy is None
    f = str(tmp_path / "inventory.yaml")
    lines = problems(
        write(tmp_path, hosts + "haproxy: {sock: /x, backends: {pg: 'pg;shutdown'}}\n")
    )
    assert f"{f}: haproxy.sock: unknown key" in lines
    assert f"{f}: haproxy.socket: required field is missing" in lines
    lines = problems(write(tmp_path, hosts + "haproxy: {socket: /x, backends: {pg: 'a;b'}}\n"))
    assert lines == [
        f"{f}: haproxy: backends.pg: 'a;b' is not an HAProxy backend name "
        "(letters, digits, '.', '_', '-', ':')"
    ]


def test_values_that_would_reach_haproxy_or_the_terminal_raw_are_refused(tmp_path: Path) -> None:
    hosts = 'hosts:\n  db-1:\n    local: {url: "http://127.0.0.1:9440"}\n'
    f = str(tmp_path / "inventory.yaml")
    # `$` matched before a trailing newline: the name went to HAProxy's runtime API with it.
    lines = problems(write(tmp_path, hosts + 'haproxy: {socket: /x, backends: {pg: "pg\\n"}}\n'))
    assert lines == [
        f"{f}: haproxy: backends.pg: 'pg\\n' is not an HAProxy backend name "
        "(letters, digits, '.', '_', '-', ':')"
    ]
    lines = problems(
        write(
            tmp_path,
            'hosts:\n  db-1:\n    labels: {role: "\\e[5mdb"}\n'
            '    local: {url: "http://127.0.0.1:9440"}\n',
        )
    )
    assert lines == [
        f"{f}: hosts.db-1.labels.role: '\\x1b[5mdb' is not printable text "
        "(no control characters, no white space at either end)"
    ]
    lines = problems(write(tmp_path, hosts + "polling: {interval: 1.0e+15}\n"))
    assert lines == [f"{f}: polling.interval: a duration must be at most 365d (a year), got 1e+15s"]


def test_the_console_refuses_to_start_on_a_bad_inventory_or_keymap_and_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 2 and the file's name before any terminal is taken over, so the operator sees
    the mistake instead of a console that cannot reach anything."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # no user keymap
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "give --inventory FILE, or try `hadeck demo`" in capsys.readouterr().err
    broken = write(tmp_path, "hosts:\n  a: {}\n")
    assert main(["--inventory", str(broken)]) == 2
    assert capsys.readouterr().err.startswith(f"{broken}: hosts.a:")
    ok = write(tmp_path, "hosts:\n  a: {local: {url: 'http://127.0.0.1:1'}}\n")
    keymap = tmp_path / "keys.yaml"
    keymap.write_text("- not a mapping\n")
    assert main(["--inventory", str(ok), "--keymap", str(keymap)]) == 2
    assert f"{keymap}" in capsys.readouterr().err
    assert main(["--inventory", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
