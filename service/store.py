"""TokenStore: the async API that routes, scripts and the bot use to keep tokens.

It speaks the seed's method names (`store_token`, `get_token`, `get_all_tokens_by_type`,
`delete_token`) and adds what the OAuth flows need: metadata beside each token, account links, and
several rows written in one transaction.

Writes on SQLite go through one asyncio lock per store and start with BEGIN IMMEDIATE, so concurrent
coroutines queue instead of meeting `database is locked`, and another process waits in busy_timeout.

The hot paths (the bot reads a token per message it answers):
- `get_token` answers from an in-process cache of decrypted values (service/cache.py) kept fresh by
  the change log (service/changes.py): this process's writes are seen by its next read, always;
  other processes' within `ChangeFeed.stale_after` (1 s).
- `store_token`/`store_tokens` go through group commit (service/group_commit.py): concurrent writes
  share one transaction and one fsync, and each caller returns only after that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Text, bindparam, delete, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service import bulk_upsert, keys
from service.cache import MISSING, TokenCache
from service.changes import APPLIED_OPTION, ChangeFeed, Changes, ChangeSignal
from service.crypto import KeyRing
from service.db import WRITE_OPTION, create_engine, create_sqlite_writer, is_sqlite, sqlite_file, write_connection
from service.errors import InvalidInput, NotConfigured, SettingsError, UndecryptableValue
from service.group_commit import GroupCommit
from service.migrate import require_head
from service.models import Account, Token, utcnow
from service.reader import SQLiteReader
from service.settings import Settings

if TYPE_CHECKING:
    from service.refresh import ShopifyTokens

TOKENS = Token.__table__
R = TypeVar("R")
_WRITTEN = "salesbot_written"  # connection.info: (key, plaintext) pairs to cache once committed
ACCOUNTS = Account.__table__
TOKEN_TYPES = ("token", "uuid")
MAX_KEY_LENGTH = 512
# Columns a caller may set beside key, value and type. A column not named in a write keeps its value;
# one named with None is cleared (a reinstall that brings a non-expiring token clears expires_at).
METADATA_COLUMNS = frozenset(
    {
        "account_uuid",
        "provider",
        "subject",
        "granted_by",
        "scopes",
        "expires_at",
        "refresh_token",
        "refresh_expires_at",
        "refresh_lease_until",
    }
)


@dataclass(frozen=True)
class TokenRecord:
    key: str
    type: str
    value: str | None = field(repr=False)  # None in listings, which never decrypt
    account_uuid: str | None = None
    provider: str | None = None
    subject: str | None = None
    granted_by: str | None = None
    scopes: str | None = None
    expires_at: datetime | None = None
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    refresh_lease_until: datetime | None = None


@dataclass(frozen=True)
class TokenWrite:
    key: str
    value: str
    type: str = "token"
    metadata: Mapping[str, Any] = field(default_factory=dict)


def validate_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise InvalidInput("A token key must be a non-empty string.")
    if len(key) > MAX_KEY_LENGTH or not key.isprintable() or any(ch.isspace() for ch in key):
        raise InvalidInput(f"A token key must be at most {MAX_KEY_LENGTH} printable characters without spaces.")
    return key


def _validate_write(write: TokenWrite) -> None:
    validate_key(write.key)
    if not isinstance(write.value, str) or not write.value:
        raise InvalidInput(f"The value for {write.key!r} must be a non-empty string.")
    if write.type not in TOKEN_TYPES:
        raise InvalidInput(f"The type of {write.key!r} must be one of {', '.join(TOKEN_TYPES)}.")
    unknown = set(write.metadata) - METADATA_COLUMNS
    if unknown:
        raise InvalidInput(f"Unknown token fields: {', '.join(sorted(unknown))}.")


@functools.cache
def _ensure_account_statement(dialect_name: str) -> Any:
    # Built once per dialect: statement construction is a measurable part of a connect's CPU.
    insert = (postgresql.insert if dialect_name == "postgresql" else sqlite.insert)(ACCOUNTS)
    return insert.values(uuid=bindparam("uuid"), created_at=bindparam("created_at")).on_conflict_do_nothing(
        index_elements=["uuid"]
    )


def _account_for_new_row(connection: Connection, write: TokenWrite, info: keys.KeyInfo) -> str | None:
    if info.is_uuid:
        return keys.as_uuid(write.value)
    if info.uuid_key is None:
        return None
    return connection.execute(select(TOKENS.c.account_uuid).where(TOKENS.c.key == info.uuid_key)).scalar()


def _ensure_account(connection: Connection, account_uuid: str) -> None:
    statement = _ensure_account_statement(connection.dialect.name)
    connection.execute(statement, {"uuid": account_uuid, "created_at": utcnow()})


class _Job:
    """One run_write() call: the work, and what its committed run returned."""

    __slots__ = ("result", "run")

    def __init__(self, run: Callable[[Connection], Any]) -> None:
        self.run = run
        self.result: Any = None


class TokenStore:
    # Set by the app (or a script) that has an HTTP client: hands out refreshed Shopify tokens.
    shopify_tokens: ShopifyTokens | None = None

    def __init__(self, engine: AsyncEngine, keyring: KeyRing, *, cache_size: int | None = None) -> None:
        self.engine = engine
        self.keyring = keyring
        # SQLite has one writer at a time anyway; queueing here turns SQLITE_BUSY into a short wait.
        self._write_lock: Any = asyncio.Lock() if is_sqlite(engine.url) else contextlib.nullcontext()
        self.cache = TokenCache(self._load_values, **({} if cache_size is None else {"max_size": cache_size}))
        path = sqlite_file(engine.url)
        # SQLite: cache misses are read on a plain sqlite3 connection in a thread of its own, query and
        # decryption in one hop (a third of the time through SQLAlchemy and aiosqlite, measured).
        self._reader = SQLiteReader(path) if path is not None else None
        self.changes = ChangeFeed(engine, self.cache, signal=None if path is None else ChangeSignal(f"{path}-changed"))
        # Each item is one store_tokens() call: its writes stay together (all or none) inside a batch.
        self._writes: GroupCommit[Sequence[TokenWrite]] = GroupCommit(self._write_batch)
        self._jobs: GroupCommit[_Job] = GroupCommit(self._run_jobs)
        # SQLite file: run_write() batches run in one thread on a synchronous engine (see run_write).
        self._writer = None if path is None else create_sqlite_writer(path, keyring)
        self._writer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="salesbot-writer")

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, target: str | Settings, *, check_schema: bool = True) -> AsyncIterator[TokenStore]:
        """Open a store on a database URL (keys from the environment and .env) or on a Settings object."""
        settings = Settings.from_environ().with_database(target) if isinstance(target, str) else target
        keyring = KeyRing.from_settings(settings)
        engine = create_engine(settings.database_url, keyring=keyring)
        store = None
        try:
            store = cls(engine, keyring)
            if check_schema:
                await store.check_schema()
            yield store
        finally:
            if store is not None:
                await store.aclose()
            await engine.dispose()

    async def aclose(self) -> None:
        """Let queued writes commit and stop background polls (TokenStore.open does this on exit)."""
        await self._writes.drain()
        await self._jobs.drain()
        if self._writer is not None:
            await asyncio.get_running_loop().run_in_executor(self._writer_thread, self._writer.dispose)
        self._writer_thread.shutdown(wait=True)
        await self.changes.aclose()
        if self._reader is not None:
            await self._reader.aclose()

    async def check_keys(self) -> None:
        """Open the most recently written value with the key ring; when no key in it does, raise one
        line naming the settings (a wrong key must stop a command before it writes or serves)."""
        newest = (
            select(TOKENS.c.key, type_coerce(TOKENS.c.value, Text))
            .order_by(TOKENS.c.updated_at.desc().nulls_last(), TOKENS.c.key)
            .limit(1)
        )
        async with self.engine.connect() as connection:
            row = (await connection.execute(newest)).first()
        if row is None:
            return
        try:
            self.keyring.decrypt(row[1], key_name=row[0])
        except UndecryptableValue:
            raise SettingsError(
                f"No key in TOKEN_ENCRYPTION_KEYS (nor the one derived from STATE_TOKEN_SECRET) opens the stored "
                f"value of {row[0]}: set TOKEN_ENCRYPTION_KEYS to the keys this database was written with."
            ) from None

    async def check_schema(self) -> None:
        await require_head(self.engine)

    # --- transactions ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction; on SQLite, one at a time per store and holding the write lock from BEGIN.

        Whatever it changes in `tokens` is dropped from this process's cache after the commit and
        before this returns (the triggers of revision 0004 log it; we read the log in the same
        transaction), so callers anywhere (routes, jobs, key rotation) need do nothing for freshness."""
        async with self._write_lock:
            connection = await write_connection(self.engine)
            try:
                await connection.execution_options(**{APPLIED_OPTION: True})
                async with connection.begin():
                    await self.changes.lock(connection)
                    yield connection
                    changes = await self.changes.read(connection)
                self.changes.apply(changes)
                self.changes.announce(changes)
                # Values this transaction wrote and knows in plaintext (group commit's batches), put in
                # the cache right after the invalidation, with no await between: nothing newer can be
                # applied in between, so the next read is a hit instead of a miss.
                for key, value in connection.info.pop(_WRITTEN, ()):
                    self.cache.put(key, value)
            finally:
                await connection.close()

    async def run_write(self, job: Callable[[Connection], R]) -> R:
        """Run `job` in a write transaction shared with the jobs queued meanwhile; return its result once committed.

        Group commit (service/group_commit.py) for the OAuth flows' small transactions: under load one
        BEGIN, change-log read and COMMIT serve many jobs, and the write lock is taken once per batch.
        Jobs are plain functions of a (synchronous) Connection: on a SQLite file a whole batch runs in
        one hop to a writer thread of its own, where through aiosqlite each statement was three or four
        hops, each waiting its turn on a busy event loop (the lock was held ~20 ms a batch, measured);
        elsewhere they run through `AsyncConnection.run_sync`. Jobs run one after another in submission
        order, as separate transactions would. A job that raises rolls back its batch; every job of it
        then runs again alone, so a job must only touch the database through `connection`."""
        item = _Job(job)
        await self._jobs.submit(item)
        return item.result  # type: ignore[no-any-return]

    async def _run_jobs(self, batch: Sequence[_Job]) -> None:
        if self._writer is None:
            async with self.write_transaction() as connection:
                for job in batch:
                    job.result = await connection.run_sync(job.run)
            return
        async with self._write_lock:
            done = asyncio.get_running_loop().run_in_executor(self._writer_thread, self._run_jobs_here, batch)
            # As write_transaction() does: this process's next read sees what the batch changed. In a
            # callback, registered first, so it runs before we resume and even if we are cancelled
            # (the thread commits anyway; shielded, so the callback still sees the outcome).
            done.add_done_callback(self._apply_batch)
            await asyncio.shield(done)

    def _apply_batch(self, done: asyncio.Future[Changes]) -> None:
        if not done.cancelled() and done.exception() is None:
            self.changes.apply(done.result())
            self.changes.announce(done.result())

    def _run_jobs_here(self, batch: Sequence[_Job]) -> Changes:
        assert self._writer is not None
        with self._writer.connect() as connection:
            connection = connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():  # BEGIN IMMEDIATE (service/db.py)
                for job in batch:
                    job.result = job.run(connection)
                return self.changes.read_sync(connection)

    # --- the seed's API --------------------------------------------------------------------------

    async def store_token(self, key: str, value: str, type: str = "token", **metadata: Any) -> None:
        await self.store_tokens([TokenWrite(key, value, type, metadata)])

    async def get_token(self, key: str) -> str | None:
        # A hit is a dict lookup: no thread hop, no query, no decryption (keys in the cache are valid).
        if self.changes.fresh():
            value = self.cache.lookup(key)
            if value is not MISSING:
                return value  # type: ignore[return-value]
        else:
            await self.changes.sync()
        validate_key(key)
        return await self.cache.load(key)

    async def _load_values(self, wanted: list[str]) -> dict[str, str | BaseException | None]:
        """The cache's loader: one query for many keys; a value no key opens fails only its own key."""
        if self._reader is not None:
            return await self._reader.run(self._decrypt_rows, wanted)
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(TOKENS.c.key, type_coerce(TOKENS.c.value, Text)).where(TOKENS.c.key.in_(wanted))
                )
            ).all()
        return self._decrypt_rows(wanted, rows)

    def _decrypt_rows(
        self, wanted: list[str], rows: Iterable[tuple[str, str]]
    ) -> dict[str, str | BaseException | None]:
        found: dict[str, str | BaseException | None] = dict.fromkeys(wanted)
        decrypt = self.keyring.decrypt
        for key, ciphertext in rows:
            try:
                found[key] = decrypt(ciphertext, key_name=key)
            except UndecryptableValue as error:
                found[key] = error
        return found

    async def get_all_tokens_by_type(self, type: str) -> dict[str, str]:
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(TOKENS.c.key, type_coerce(TOKENS.c.value, Text)).where(TOKENS.c.type == type)
                )
            ).all()
        return {key: self.keyring.decrypt(ciphertext, key_name=key) for key, ciphertext in rows}

    async def delete_token(self, key: str) -> bool:
        return await self.delete_tokens([validate_key(key)]) == 1

    # --- richer API for the flows ----------------------------------------------------------------

    async def store_tokens(self, writes: Sequence[TokenWrite]) -> None:
        """Write several rows in one transaction: all of them land, or none."""
        for write in writes:
            _validate_write(write)
        if not writes:
            return
        await self._writes.submit(list(writes))

    async def _write_batch(self, batch: Sequence[Sequence[TokenWrite]]) -> None:
        # Group commit's runner: every queued store_tokens() call in one transaction, one commit.
        async with self.write_transaction() as connection:
            writes = [write for writes in batch for write in writes]
            await bulk_upsert.upsert_all(connection, writes)
            connection.info[_WRITTEN] = [(write.key, write.value) for write in writes]

    async def _upsert(self, connection: AsyncConnection, write: TokenWrite) -> None:
        await connection.run_sync(self._upsert_sync, write)

    def _upsert_sync(self, connection: Connection, write: TokenWrite) -> None:
        metadata = dict(write.metadata)
        info = keys.describe_key(write.key)
        if info is not None:
            metadata.setdefault("provider", info.provider)
            metadata.setdefault("subject", info.subject)
            if "account_uuid" not in metadata:
                account = _account_for_new_row(connection, write, info)
                if account is not None:
                    metadata["account_uuid"] = account
        if metadata.get("account_uuid") is not None:
            _ensure_account(connection, metadata["account_uuid"])
        # The statement is prebuilt per shape (bulk_upsert.statement, cached): building it here anew
        # cost more than running it, measured. Same upsert: metadata named is set, the rest kept.
        shape = (False, frozenset(metadata))
        params = bulk_upsert.parameters(write.key, write.value, write.type, metadata, utcnow())
        connection.execute(bulk_upsert.statement(connection.dialect.name, shape), params)
        if info is not None and info.is_uuid and metadata.get("account_uuid"):
            # The token beside a UUID entry belongs to the same account, as the seed meant it.
            connection.execute(
                update(TOKENS).where(TOKENS.c.key == info.token_key).values(account_uuid=metadata["account_uuid"])
            )

    async def _ensure_account(self, connection: AsyncConnection, account_uuid: str) -> None:
        await connection.run_sync(_ensure_account, account_uuid)

    async def delete_tokens(self, keys_to_delete: Iterable[str]) -> int:
        wanted = list(keys_to_delete)
        if not wanted:
            return 0
        async with self.write_transaction() as connection:
            result = await connection.execute(delete(TOKENS).where(TOKENS.c.key.in_(wanted)))
        return result.rowcount

    async def get_record(self, key: str) -> TokenRecord | None:
        validate_key(key)
        records = await self._records(TOKENS.c.key == key)
        return records[0] if records else None

    async def account_tokens(self, account_uuid: str) -> list[TokenRecord]:
        """Everything one account owns, decrypted, in one query on the indexed account column."""
        return await self._records(TOKENS.c.account_uuid == account_uuid)

    async def _records(self, condition: Any) -> list[TokenRecord]:
        columns = [column for column in TOKENS.c if column.name not in {"value", "refresh_token"}]
        statement = (
            select(*columns, type_coerce(TOKENS.c.value, Text), type_coerce(TOKENS.c.refresh_token, Text))
            .where(condition)
            .order_by(TOKENS.c.key)
        )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        records = []
        for row in rows:
            *plain, value, refresh = row
            fields = dict(zip((column.name for column in columns), plain, strict=True))
            fields["value"] = self.keyring.decrypt(value, key_name=fields["key"])
            fields["refresh_token"] = (
                None if refresh is None else self.keyring.decrypt(refresh, key_name=fields["key"] + " (refresh token)")
            )
            records.append(TokenRecord(**fields))
        return records

    async def list_tokens(self, type: str | None = None, *, account_uuid: str | None = None) -> list[TokenRecord]:
        """Rows' metadata, values not decrypted (listings and status pages never show them)."""
        columns = [column for column in TOKENS.c if column.name not in {"value", "refresh_token"}]
        statement = select(*columns).order_by(TOKENS.c.key)
        if type is not None:
            statement = statement.where(TOKENS.c.type == type)
        if account_uuid is not None:
            statement = statement.where(TOKENS.c.account_uuid == account_uuid)
        return [TokenRecord(value=None, **row) for row in await self._read_rows(statement)]

    async def _read_rows(self, statement: Any) -> Sequence[Any]:
        """Rows of one query, as mappings. On a SQLite file, in the reader's thread on the synchronous
        engine: one hop instead of a pool checkout and ~8 through aiosqlite (the status page, measured)."""
        if self._reader is None or self._writer is None:
            async with self.engine.connect() as connection:
                return (await connection.execute(statement)).mappings().all()
        writer = self._writer

        def read() -> Sequence[Any]:
            with writer.connect() as connection:  # its own connection in this thread; BEGIN DEFERRED
                return connection.execute(statement).mappings().all()

        return await self._reader.call(read)

    async def create_account(self) -> str:
        account = str(uuid.uuid4())
        async with self.write_transaction() as connection:
            await self._ensure_account(connection, account)
        return account

    async def link_to_account(self, key: str, account_uuid: str) -> bool:
        validate_key(key)
        if keys.as_uuid(account_uuid) != account_uuid:
            raise InvalidInput("An account UUID must be a lower-case UUID.")
        async with self.write_transaction() as connection:
            await self._ensure_account(connection, account_uuid)
            result = await connection.execute(
                update(TOKENS).where(TOKENS.c.key == key).values(account_uuid=account_uuid, updated_at=utcnow())
            )
        return result.rowcount == 1

    async def get_shopify_token(self, shop: str) -> str | None:
        """A working Shopify access token for the shop, refreshed first when it expires within minutes."""
        if self.shopify_tokens is None:
            raise NotConfigured("This store has no Shopify client attached (service.refresh.ShopifyTokens).")
        return await self.shopify_tokens.get(shop)

    async def upsert(self, connection: AsyncConnection, write: TokenWrite) -> None:
        """Write one row inside a transaction the caller holds (from write_transaction())."""
        await connection.run_sync(self.upsert_sync, write)

    def upsert_sync(self, connection: Connection, write: TokenWrite) -> None:
        """upsert() for a run_write() job."""
        _validate_write(write)
        self._upsert_sync(connection, write)

    async def account_of(self, key: str) -> str | None:
        async with self.engine.connect() as connection:
            return (await connection.execute(select(TOKENS.c.account_uuid).where(TOKENS.c.key == key))).scalar()


__all__ = ["TokenRecord", "TokenStore", "TokenWrite", "UndecryptableValue"]
