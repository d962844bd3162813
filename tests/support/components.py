"""The one rule for real components that are not installed: skip on a laptop, fail in CI."""

from __future__ import annotations

import os

import pytest


def missing(what: str, packages: str) -> None:
    """Stop this test because `what` is not installed; `packages` are the Debian packages."""
    unavailable(
        f"{what} not found: install the Debian package(s) {packages} "
        f"(apt-get install -y {packages})"
    )


def unavailable(message: str) -> None:
    """Stop this test because what it needs is not to be had here: skip, or fail in CI."""
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
