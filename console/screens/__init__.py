"""One screen per module: fleet, host, events, audit, help."""
