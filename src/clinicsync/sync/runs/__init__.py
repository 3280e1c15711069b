"""Sync runs: full syncs, incremental pulls and their schedule, with progress, cancel and history."""
