"""Themes are data in `themes/*.toml`; this turns them into Textual themes.

Status colours come from the theme (success, warning, error), never from code,
so a high-contrast or light theme recolours every badge and row.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from textual.theme import Theme


def _themes_dir() -> Path:
    """`themes/` beside the packages in a checkout; an installed wheel puts the same files
    in `<prefix>/share/hadeck/themes` (pyproject's data-files)."""
    checkout = Path(__file__).resolve().parent.parent / "themes"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "hadeck" / "themes"


THEMES_DIR = _themes_dir()
DEFAULT = "hadeck-dark"
_FIELDS = {
    "name", "dark", "primary", "secondary", "accent", "success", "warning", "error",
    "foreground", "background", "surface", "panel",
}  # fmt: skip


def load_themes(directory: Path = THEMES_DIR) -> list[Theme]:
    themes = []
    for path in sorted(directory.glob("*.toml")):
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        unknown = set(data) - _FIELDS
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        themes.append(Theme(**data))
    return themes


def severity_style(theme: Theme, severity: str) -> str:
    """The Rich style for a status word, from the theme's own colours."""
    colour = {
        "ok": theme.success,
        "live": theme.success,
        "up": theme.success,
        "info": theme.foreground,
        "degraded": theme.warning,
        "warning": theme.warning,
        "stale": theme.warning,
        "flapping": theme.warning,
        "down": theme.error,
        "critical": theme.error,
        "gave_up": theme.error,
    }.get(severity, theme.secondary)
    bold = severity in ("down", "critical", "gave_up")
    return f"{'bold ' if bold else ''}{colour or ''}".strip()
