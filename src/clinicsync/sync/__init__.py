"""Keeping each clinic's PMS in step: sync configs, the SyncManager write path, the outbox, delivery."""
