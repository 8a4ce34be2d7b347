"""The `nixrec events` verb (placeholder until its issue lands)."""

COMMANDS = []
