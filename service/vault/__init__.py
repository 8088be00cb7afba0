"""The token vault: the only code that reads or writes `tokens` and `accounts` (DESIGN.md, "The vault").

Its face: everything the rest of the service uses is named here; outside the vault, code imports from
`service.vault` (and its modules of words and rows: `events`, `health`, `rows`, `files`), never from
the store's parts. A test holds every module outside the vault to that.
"""

from service.vault import events, files, health, rows
from service.vault.bulk import IMPORTED, REPLACED, SKIPPED, UNCHANGED, Outcome, Rotation, StoredRow
from service.vault.connections import PageConnection, ShopConnection
from service.vault.event_feed import LOOK_ANYWAY_SECONDS, Wakeups
from service.vault.event_log import Delivery, Filters, LoggedEvent, keep_sequence, sqlite_sequence
from service.vault.events import Actor, Event
from service.vault.freshness import announce_replaced, change_version
from service.vault.planner import Plan, Step, Swap
from service.vault.postgres import asyncpg_dsn
from service.vault.probe import values_under
from service.vault.refresh import ShopifyTokens
from service.vault.schema import TokenRecord, TokenWrite
from service.vault.sql import from_disk
from service.vault.store import TokenStore
from service.vault.verdicts import NOTE_USED_EVERY, PageToCheck, Removal
from service.vault.writes import ReadWrite

__all__ = [
    "IMPORTED",
    "LOOK_ANYWAY_SECONDS",
    "NOTE_USED_EVERY",
    "REPLACED",
    "SKIPPED",
    "UNCHANGED",
    "Actor",
    "Delivery",
    "Event",
    "Filters",
    "LoggedEvent",
    "Outcome",
    "PageConnection",
    "PageToCheck",
    "Plan",
    "ReadWrite",
    "Removal",
    "Rotation",
    "ShopConnection",
    "ShopifyTokens",
    "Step",
    "StoredRow",
    "Swap",
    "TokenRecord",
    "TokenStore",
    "TokenWrite",
    "Wakeups",
    "announce_replaced",
    "asyncpg_dsn",
    "change_version",
    "events",
    "files",
    "from_disk",
    "health",
    "keep_sequence",
    "rows",
    "sqlite_sequence",
    "values_under",
]
