"""Operator jobs (keys rotate, import-env, import-db, backup/restore, tokens check): DESIGN.md, "Jobs".

What the `salesbot` parser needs from them lives here, so building it imports no database code.
"""

from __future__ import annotations

DEFAULT_BATCH_SIZE = 500


class JobError(Exception):
    """A job could not start or had to stop: the message says why, without any value."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
