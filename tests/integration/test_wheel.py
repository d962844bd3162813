"""The README's commands hold for an installed wheel too, not only for the checkout."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_an_installed_wheel_finds_its_themes_and_styles(tmp_path: Path) -> None:
    """Built and installed as pip does, into a fresh prefix that is not the checkout (the
    dependencies come from this environment, the project itself only from the wheel)."""
    built = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(built), str(ROOT)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    [wheel] = built.glob("hadeck-*.whl")
    prefix = tmp_path / "installed"
    venv.create(prefix, with_pip=False)
    target = subprocess.run(
        [prefix / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed",
         "--prefix", str(prefix), str(wheel)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    # The dependencies from here, by path only: not this environment's editable install.
    (Path(target) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    code = (
        "import json, pathlib, console, console.theming as t\n"
        "from console.app import HadeckApp\n"
        "css = pathlib.Path(console.__file__).parent / HadeckApp.CSS_PATH\n"
        "print(json.dumps({'module': console.__file__, 'css': css.is_file(),"
        " 'themes': [x.name for x in t.load_themes()]}))\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    run = subprocess.run(
        [prefix / "bin" / "python", "-c", code],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=True, env=clean,
    )  # fmt: skip
    found = json.loads(run.stdout)
    assert found["module"].startswith(str(prefix)), found  # the wheel's, not the checkout's
    assert found["themes"] == ["hadeck-dark", "hadeck-high-contrast", "hadeck-light"]
    assert found["css"], found
