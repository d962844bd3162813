"""hadeck-agent: the per-host daemon that probes, detects, recovers and reports."""

__version__ = "0.1.0"
