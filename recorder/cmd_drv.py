"""The `nixrec drv` verb (placeholder until its issue lands)."""

COMMANDS = []
