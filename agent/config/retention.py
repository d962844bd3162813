"""The `retention` section: how long, and how much, the state database keeps."""

from __future__ import annotations

from pydantic import Field

from agent.config.base import Count, PositiveDuration, Strict


class RetentionSection(Strict):
    events: PositiveDuration = 30 * 86400.0
    probe_results: PositiveDuration = 86400.0
    max_events: Count = Field(default=100_000, ge=100)
    max_probe_results: Count = Field(default=200_000, ge=1000)
