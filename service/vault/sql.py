"""Every statement the vault runs on `tokens` and `accounts`, and how each dialect takes its parameters.

Statements are written once with `:name` parameters; `IN :name` takes a list. `for_dialect` turns a
statement into what the driver runs: sqlite3 takes named parameters and the list as JSON; asyncpg
takes `$n` and the list as an array. Datetimes are aware UTC in Python and naive UTC on disk, as
service.models.UTCDateTime stores them, so rows written here and through SQLAlchemy read the same.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service import keys
from service.vault.schema import HEALTH_COLUMNS, PAGE_TOKEN_ROWS, RECORD_COLUMNS

SQLITE, POSTGRES = "sqlite", "postgresql"
# SQLAlchemy's SQLite DateTime storage format: a fixed width, so text order is time order.
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"
_IN_LIST = re.compile(r"\bIN :(\w+)")
_PARAMETER = re.compile(r"(?<![:\w]):(\w+)")


@dataclass(frozen=True)
class Prepared:
    """A statement as one driver runs it: its text, and the parameter names in placeholder order."""

    text: str
    names: tuple[str, ...]
    lists: frozenset[str]


@functools.cache
def for_dialect(statement: str, dialect: str) -> Prepared:
    lists = frozenset(_IN_LIST.findall(statement))
    names: list[str] = []
    if dialect == SQLITE:
        statement = statement.removesuffix(" FOR UPDATE")  # its write transaction holds the lock already
        # Positional `?`: sqlite3 binds a tuple faster than a dict (measured: a third of a point read).
        text = _IN_LIST.sub(r"IN (SELECT value FROM json_each(:\1))", statement)

        def mark(match: re.Match[str]) -> str:
            names.append(match.group(1))
            return "?"

        return Prepared(_PARAMETER.sub(mark, text), tuple(names), lists)

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return Prepared(_PARAMETER.sub(number, _IN_LIST.sub(r"= ANY(:\1)", statement)), tuple(names), lists)


def to_disk(value: Any, dialect: str) -> Any:
    return _datetime_to_disk(value, dialect) if isinstance(value, datetime) else value


@functools.lru_cache(maxsize=256)
def _datetime_to_disk(value: datetime, dialect: str) -> Any:
    # Cached: one write binds its `now` twice, and a batch binds it once a row.
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    naive = value.astimezone(UTC).replace(tzinfo=None)
    return naive.strftime(_SQLITE_DATETIME) if dialect == SQLITE else naive


def from_disk(value: Any) -> datetime | None:
    """A datetime column's value as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def bind(prepared: Prepared, row: Mapping[str, Any], dialect: str) -> tuple[Any, ...]:
    """One parameter row as the driver takes it, in placeholder order (lists: JSON for sqlite3, arrays for asyncpg)."""
    if dialect == SQLITE:
        return tuple(
            json.dumps(list(row[name])) if name in prepared.lists else to_disk(row[name], dialect)
            for name in prepared.names
        )
    return tuple(list(row[name]) if name in prepared.lists else to_disk(row[name], dialect) for name in prepared.names)


# --- reads ---------------------------------------------------------------------------------------

# What the cache keeps of a row: the plaintext, when it expires, whether it can be refreshed.
_ENTRY = "SELECT key, value, expires_at, refresh_token IS NOT NULL FROM tokens"
LOAD = f"{_ENTRY} WHERE key IN :keys"
LOAD_ONE = f"{_ENTRY} WHERE key = :key"
VALUES_BY_TYPE = "SELECT key, value FROM tokens WHERE type = :type AND key > :after ORDER BY key LIMIT :limit"
_RECORD = ", ".join(RECORD_COLUMNS)
RECORD = f"SELECT {_RECORD}, value, refresh_token FROM tokens WHERE key = :key"
ACCOUNT_RECORDS = f"SELECT {_RECORD}, value, refresh_token FROM tokens WHERE account_uuid = :account ORDER BY key"
# Listings: metadata, and whether a refresh token is there, never a ciphertext.
_LISTED = f"SELECT {_RECORD}, refresh_token IS NOT NULL FROM tokens"
LISTING = f"{_LISTED} WHERE key > :after ORDER BY key LIMIT :limit"
LISTING_BY_TYPE = f"{_LISTED} WHERE type = :type AND key > :after ORDER BY key LIMIT :limit"
ACCOUNT_LISTING = f"{_LISTED} WHERE account_uuid = :account ORDER BY key"
ACCOUNT_OF = "SELECT account_uuid FROM tokens WHERE key = :key"
ACCOUNT_EXISTS = "SELECT uuid FROM accounts WHERE uuid = :account"
# Who holds what: the account and the granting Facebook user of each key (account linking).
LINKS = "SELECT key, account_uuid, granted_by FROM tokens WHERE key IN :keys FOR UPDATE"
# What the bot asks (vault/connections.py), one statement each, every row found through an index: the
# token's row by key, its account (its own link, else its UUID entry's), then the account's other rows
# through the account index. Only the first row carries a ciphertext.
# Both carry the token row's health columns (vault/health.py decides what they mean).
PAGE_CONNECTION = (
    "SELECT page.key, page.value, page.expires_at, page.account, page.name, "
    "(SELECT shop.key FROM tokens AS shop WHERE shop.account_uuid = page.account AND shop.type = 'token' "
    f"AND substr(shop.key, 1, {len(keys.SHOPIFY_TOKEN_PREFIX)}) = '{keys.SHOPIFY_TOKEN_PREFIX}' "
    "ORDER BY shop.created_at, shop.key LIMIT 1), "
    "page.health, page.health_reason, page.health_until "
    "FROM (SELECT key, value, expires_at, name, health, health_reason, health_until, "
    "coalesce(account_uuid, (SELECT link.account_uuid FROM tokens AS link WHERE link.key = :uuid_key)) AS account "
    "FROM tokens WHERE key = :key) AS page"
)
SHOP_CONNECTION = (
    "WITH shop AS (SELECT key, value, expires_at, refresh_token IS NOT NULL AS refreshable, "
    "coalesce(account_uuid, (SELECT link.account_uuid FROM tokens AS link WHERE link.key = :uuid_key)) AS account, "
    "health, health_reason, health_until, refresh_expires_at FROM tokens WHERE key = :key) "
    "SELECT key, value, expires_at, refreshable, account, health, health_reason, health_until, refresh_expires_at "
    "FROM shop UNION ALL SELECT page.key, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM tokens AS page JOIN shop "
    "ON page.account_uuid = shop.account WHERE page.type = 'token' "
    f"AND substr(page.key, 1, {len(keys.PAGE_TOKEN_PREFIX)}) = '{keys.PAGE_TOKEN_PREFIX}'"
)
COUNT = "SELECT count(*) FROM tokens"
NEWEST = "SELECT key, value FROM tokens ORDER BY updated_at DESC NULLS LAST, key LIMIT 1"
# Jobs: ciphertexts as stored, a batch at a time in key order.
_RAW = "SELECT key, type, value, refresh_token, provider, subject, expires_at, health FROM tokens"
RAW_BATCH = f"{_RAW} WHERE key > :after ORDER BY key LIMIT :limit"
RAW_ROWS = f"{_RAW} WHERE key IN :keys"
CIPHERTEXTS = "SELECT key, value FROM tokens WHERE key IN :keys"
# SQLite's change log (revision 0006): the newest seq is the version; readers look back this far at most.
CHANGE_VERSION = "SELECT coalesce(max(seq), 0) FROM token_changes"
CHANGED_KEYS = "SELECT key FROM token_changes WHERE seq > :after AND seq <= :upto ORDER BY seq"

# Rows as they were before a change deletes or marks them, for its events (vault/events.py, StoredRow).
_EVENT_ROW = "SELECT key, type, value, account_uuid, name, updated_at, expires_at FROM tokens"
EVENT_ROWS = f"{_EVENT_ROW} WHERE key IN :keys FOR UPDATE"
# What FORGET_FACEBOOK_USER deletes, read first (the same condition).
FACEBOOK_USER_ROWS = (
    f"{_EVENT_ROW} WHERE key = :user_key OR (granted_by = :user AND type = 'token') "
    "OR (:erase_links AND (granted_by = :user OR key IN "
    "(SELECT 'PAGE_UUID_' || subject FROM tokens AS page WHERE page.granted_by = :user))) FOR UPDATE"
)

# A token row's verdict as stored, before a new one is written (vault/verdicts.py), and before a
# refreshed pair replaces it (vault/refresh.py): whether it still holds the token, and how it stood.
HEALTH_ROW = "SELECT value, health, health_reason, health_until FROM tokens WHERE key = :key FOR UPDATE"
REFRESH_ROW = "SELECT value, health, refresh_failures FROM tokens WHERE key = :key FOR UPDATE"

ADVISORY_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"

# --- writes --------------------------------------------------------------------------------------

# A bounded bite of the oldest entries at or below :upto, so no one write pays for a long backlog.
PRUNE_CHANGES = (
    "DELETE FROM token_changes WHERE seq IN (SELECT seq FROM token_changes WHERE seq <= :upto ORDER BY seq LIMIT 2000)"
)
# A jump no reader can catch up across key by key: every process drops its whole cache (restore).
CHANGE_GAP = "INSERT INTO token_changes (seq, key) VALUES (:seq, '')"

ENSURE_ACCOUNT = "INSERT INTO accounts (uuid, created_at) VALUES (:account, :now) ON CONFLICT (uuid) DO NOTHING"
# The token beside a UUID entry belongs to the entry's account, as the seed meant it.
LINK_TOKEN = (
    "UPDATE tokens SET account_uuid = entry.account_uuid FROM tokens AS entry "
    "WHERE tokens.key = :key AND entry.key = :entry_key AND entry.account_uuid IS NOT NULL"
)
# `value = value` names a watched column, so the change log and NOTIFY carry the key to every process's
# cache (a link is part of the connections cached there); the value itself is left as it is.
RELINK_TOKEN = (
    "UPDATE tokens SET account_uuid = :account, updated_at = :now, value = value WHERE key = :key RETURNING key"
)
DELETE_KEYS = "DELETE FROM tokens WHERE key IN :keys RETURNING key"
# Revocations (service/revocations.py). An uninstall older than the stored token (a reinstall raced
# its webhook) deletes nothing (vault/deletions.py decides) and is not remembered as a removal.
_NOT_AFTER = "(CAST(:not_after AS TIMESTAMP) IS NULL OR updated_at IS NULL OR updated_at <= :not_after)"
# What a revocation removed, for the merchant to see once (connection_removals), written before the rows
# go, in the same transaction: the account from the row or its UUID entry, the name as last stored.
_REMOVAL = "INSERT INTO connection_removals (account_uuid, provider, subject, name, reason, removed_at) "
_ACCOUNT_OF = "coalesce({row}.account_uuid, (SELECT link.account_uuid FROM tokens AS link WHERE link.key = {uuid_key}))"
REMOVED_SHOP = (
    _REMOVAL + f"SELECT {_ACCOUNT_OF.format(row='tokens', uuid_key=':uuid_key')}, 'shopify', :subject, name, :reason, "
    f":now FROM tokens WHERE key = :key AND {_NOT_AFTER}"
)
REMOVED_PAGE = (
    _REMOVAL + f"SELECT {_ACCOUNT_OF.format(row='tokens', uuid_key=':uuid_key')}, 'facebook', :subject, name, :reason, "
    ":now FROM tokens WHERE key = :key"
)
# The Pages a Facebook user's grant gave.
_PAGE_ACCOUNT = _ACCOUNT_OF.format(row="page", uuid_key="'PAGE_UUID_' || page.subject")
REMOVED_PAGES_OF_USER = (
    _REMOVAL + f"SELECT {_PAGE_ACCOUNT}, "
    "'facebook', page.subject, page.name, :reason, :now FROM tokens AS page "
    f"WHERE page.granted_by = :user AND page.type = 'token' AND {PAGE_TOKEN_ROWS.replace('key', 'page.key')}"
)
UNSEEN_REMOVALS = (
    "SELECT id, provider, subject, name, reason, removed_at FROM connection_removals "
    "WHERE account_uuid = :account AND seen_at IS NULL ORDER BY id"
)
SEEN_REMOVALS = "UPDATE connection_removals SET seen_at = :now WHERE id IN :ids AND seen_at IS NULL RETURNING id"
PRUNE_REMOVALS = "DELETE FROM connection_removals WHERE removed_at < :before RETURNING id"
# A Facebook user's token and every Page token their grant gave; with erase_links, the Pages' links too
# (links carry granted_by; older ones are found through their Page token's subject).
FORGET_FACEBOOK_USER = (
    "DELETE FROM tokens WHERE key = :user_key OR (granted_by = :user AND type = 'token') "
    "OR (:erase_links AND (granted_by = :user OR key IN "
    "(SELECT 'PAGE_UUID_' || subject FROM tokens AS page WHERE page.granted_by = :user))) RETURNING key"
)
# Compare-and-swap: only while the stored ciphertexts are still the ones read (keys rotate, tokens check).
_SAME = (
    "value = :old AND (refresh_token = CAST(:old_refresh AS TEXT) "
    "OR (refresh_token IS NULL AND CAST(:old_refresh AS TEXT) IS NULL))"
)
SWAP_CIPHERTEXTS = (
    f"UPDATE tokens SET value = :new, refresh_token = :new_refresh WHERE key = :key AND {_SAME} RETURNING key"
)
# Health (vault/health.py): a provider's verdict, written only where it differs from the stored one
# (`value = value`, so every process's cached connection hears of it), and only while the row still
# holds the token it is about (:expected, the ciphertext; NULL: whatever it holds).
_STILL_HOLDS = "(CAST(:expected AS TEXT) IS NULL OR value = :expected)"
SET_HEALTH = (
    "UPDATE tokens SET health = :health, health_reason = :reason, health_until = :until, value = value "
    f"WHERE key = :key AND {_STILL_HOLDS} AND (coalesce(health, '') <> :health_text "
    "OR coalesce(health_reason, '') <> :reason_text OR coalesce(health_until, :epoch) <> :until_or_epoch) RETURNING key"
)
MARK_CHECKED = f"UPDATE tokens SET checked_at = :now WHERE key = :key AND {_STILL_HOLDS}"
# A failed Shopify refresh: the lease ends, and the cooldown every process waits out begins.
REFRESH_FAILED = (
    "UPDATE tokens SET refresh_lease_until = NULL, refresh_failures = :failures, refresh_retry_at = :retry_at "
    "WHERE key = :key"
)
# When a bot last asked for a shop's token (not a watched column: no cache hears of it).
NOTE_USED = "UPDATE tokens SET used_at = :now WHERE key IN :keys"
# The sweep's work (service/sweep.py), each through its partial index (revision 0010), a bite at a time.
# Shops in use whose token expires soon; refresh chains near their end; Pages never checked, then the
# longest unchecked. Rows that need reconnecting, or wait out a cooldown, are left alone.
_SWEEPABLE_SHOP = (
    "SELECT key FROM tokens WHERE refresh_token IS NOT NULL AND {column} >= :now AND {column} < :horizon "
    "AND (health IS NULL OR health <> 'needs_reconnect') "
    "AND (refresh_retry_at IS NULL OR refresh_retry_at <= :now){more} ORDER BY {column} LIMIT :limit"
)
SHOPS_DUE = _SWEEPABLE_SHOP.format(column="expires_at", more=" AND used_at >= :used_since")
CHAINS_ENDING = _SWEEPABLE_SHOP.format(column="refresh_expires_at", more="")
_PAGE_TOKENS = f"SELECT key, value FROM tokens WHERE {PAGE_TOKEN_ROWS} AND "
PAGES_NEVER_CHECKED = _PAGE_TOKENS + "checked_at IS NULL LIMIT :limit"
PAGES_CHECKED_BEFORE = _PAGE_TOKENS + "checked_at < :before ORDER BY checked_at LIMIT :limit"
# The Shopify refresh lease (vault/refresh.py): taken only when free or run out.
TAKE_LEASE = (
    "UPDATE tokens SET refresh_lease_until = :until WHERE key = :key "
    "AND (refresh_lease_until IS NULL OR refresh_lease_until < :now) RETURNING key"
)
END_LEASE = "UPDATE tokens SET refresh_lease_until = NULL WHERE key = :key"
LEASE = "SELECT refresh_lease_until FROM tokens WHERE key = :key"


@functools.cache
def set_columns(columns: frozenset[str]) -> str:
    assignments = ", ".join(f"{name} = :{name}" for name in sorted(columns))
    if columns & {"account_uuid", "name"}:
        # As RELINK_TOKEN: every process hears of a new link or name (cached connections carry both; the
        # change triggers watch the value, not these columns).
        assignments += ", value = value"
    return f"UPDATE tokens SET {assignments} WHERE key = :key RETURNING key"


_PLAIN_UPSERTS: set[str] = set()


def is_plain_upsert(statement: str) -> bool:
    """An unguarded upsert of upsert(): it always writes its one row, and returns nothing."""
    return statement in _PLAIN_UPSERTS


@functools.cache
def upsert(columns: frozenset[str], *, account_from_entry: bool, guard: str | None) -> str:
    """Insert a token or update it in place. Columns the write names are set; the rest keep their values.

    account_from_entry: the account is the one its `*_UUID_*` entry (`:uuid_key`) names, if any; a row
    keeps its link when the entry names none. guard: None (always write), "absent" (only a new row),
    or "value" (only while the stored ciphertext is still `:expected`). Guarded writes return the key."""
    names = sorted(columns)
    insert_columns = ["key", "value", "type", *names, "created_at", "updated_at"]
    values = [":key", ":value", ":type", *(f":{name}" for name in names), ":now", ":now"]
    updates = ["value = excluded.value", "type = excluded.type", "updated_at = excluded.updated_at"]
    updates += [f"{name} = excluded.{name}" for name in names]
    # A new token starts with a clean bill: no verdict, no failed refreshes, not checked yet.
    updates += [f"{name} = NULL" for name in HEALTH_COLUMNS if name not in columns]
    if account_from_entry:
        insert_columns.append("account_uuid")
        values.append("(SELECT owner.account_uuid FROM tokens AS owner WHERE owner.key = :uuid_key)")
        updates.append("account_uuid = coalesce(excluded.account_uuid, tokens.account_uuid)")
    text = f"INSERT INTO tokens ({', '.join(insert_columns)}) VALUES ({', '.join(values)}) ON CONFLICT (key) "
    if guard == "absent":
        return text + "DO NOTHING RETURNING key"
    text += "DO UPDATE SET " + ", ".join(updates)
    if guard == "value":
        return text + " WHERE tokens.value = :expected RETURNING key"
    _PLAIN_UPSERTS.add(text)  # a few shapes in all: one per set of metadata columns a caller names
    return text
