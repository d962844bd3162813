"""HA groups: one primary per group, chosen through a lease store, never two."""
