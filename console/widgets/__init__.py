"""Reusable widgets: the title bar, the confirmation dialog, the command line."""
