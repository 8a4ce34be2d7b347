"""The `nixrec record` verb (placeholder until its issue lands)."""

COMMANDS = []
