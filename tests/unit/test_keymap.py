from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError
from console import keymap
from console.app import known_binding_ids


def test_a_keymap_remaps_known_ids_and_names_unknown_ones(tmp_path: Path) -> None:
    known = known_binding_ids()
    assert {"fleet.filter", "host.restart", "app.help", "app.command"} <= known
    good = tmp_path / "keymap.yaml"
    good.write_text("host.restart: ctrl+r\nfleet.filter: 'slash,f'\n")
    assert keymap.load(good, known) == {"host.restart": "ctrl+r", "fleet.filter": "slash,f"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("host.restrat: x\napp.help: ''\n")
    with pytest.raises(ConfigError) as err:
        keymap.load(bad, known)
    lines = [str(p) for p in err.value.problems]
    assert lines[0].startswith(f"{bad}: host.restrat: unknown binding id (known: ")
    assert lines[1] == f"{bad}: app.help: expected keys as a string, e.g. 'ctrl+r'"
