"""Operator jobs that run against a live store: key rotation, imports, backups, token checks."""
