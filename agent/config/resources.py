"""The `resources` section: how often host resources are sampled, and which mounts."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator

from agent.config.base import PositiveDuration, Strict


class ResourcesSection(Strict):
    interval: PositiveDuration = 15.0
    mounts: list[Path] | None = None

    @field_validator("mounts")
    @classmethod
    def _mount_points(cls, value: list[Path] | None) -> list[Path] | None:
        for mount in value or []:
            if not mount.is_absolute():
                raise ValueError(f"{str(mount)!r} is not a mount point (an absolute path)")
        return value
