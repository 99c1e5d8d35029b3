"""The task the fault suite runs: it counts its own executions in a side log."""
