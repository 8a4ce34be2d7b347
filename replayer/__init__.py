"""nixrec.replayer: rebuild a recorded sandbox and stop the build at an event."""
