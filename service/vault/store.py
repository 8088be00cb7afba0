"""TokenStore: the vault's face, in any process (DESIGN.md, "The vault").

The seed's four methods (`store_token`, `get_token`, `get_all_tokens_by_type`, `delete_token`) with
their names and results, plus what the flows, jobs and the bot need: several writes in one
transaction, records with their metadata, listings, accounts, expiring Shopify tokens, the bot's
connections and API clients (README, "From the bot"), and the event log every change writes to
(`events()`, `event_log`: DESIGN.md, "The event log").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from service import keys, metrics
from service.crypto import KeyRing
from service.db import DATABASE_ERRORS, create_engine, raise_database_error, sqlite_file, unavailable
from service.errors import InvalidInput, NotConfigured, NotFound, SettingsError, TokenRevoked, UndecryptableValue
from service.logs import redact_http_logs
from service.migrate import require_head
from service.models import utcnow
from service.providers.auth import GraphAuth, ShopifyAuth
from service.providers.shopify import normalize_shop, shop_key
from service.settings import Settings, normalize_database_url
from service.vault import connections, deletions, events, health, linking, sql
from service.vault.batching import Batcher
from service.vault.bulk import Bulk
from service.vault.cache import MISSING, PAGE, REFRESH_MARGIN, SHOP, Entry, Ticket, TokenCache
from service.vault.clients import Outbound
from service.vault.connections import CachedShop, PageConnection, ShopConnection
from service.vault.event_feed import Wakeups, follow
from service.vault.event_log import EventLog, Filters, LoggedEvent
from service.vault.events import Actor, Event, Recorder
from service.vault.linking import Joined
from service.vault.planner import (
    Plan,
    Step,
    plan_end_lease,
    plan_metadata,
    plan_take_lease,
    plan_writes,
)
from service.vault.ports import Backend
from service.vault.postgres import PostgresBackend
from service.vault.refresh import ShopifyTokens
from service.vault.schema import (
    METADATA_COLUMNS,
    RECORD_COLUMNS,
    TokenRecord,
    TokenWrite,
    validate_key,
    validate_write,
)
from service.vault.sqlite import SQLiteBackend
from service.vault.verdicts import Verdicts
from service.vault.writes import Decided, Job, ReadWrite, Write

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

R = TypeVar("R")
PAGE_SIZE = 500  # rows per query when walking the table
DECRYPT_CHUNK = 64  # values decrypted between two yields to the event loop (~2 ms)

Found = Entry | None | BaseException


@dataclass(eq=False)
class _Load:
    """One PostgreSQL cache miss in the loader's queue; later misses of the same key join it."""

    key: str
    future: asyncio.Future[Found]  # what those who join it wait for
    ticket: Ticket | None = None  # set when its query is sent


class TokenStore:
    def __init__(
        self,
        backend: Backend,
        *,
        engine: AsyncEngine,
        keyring: KeyRing,
        cache: TokenCache,
        settings: Settings,
        outbound: Outbound,
        actor: str = events.BOT,
    ) -> None:
        self._backend = backend
        self._ring = keyring
        self._cache = cache
        self.settings = settings
        self._outbound = outbound
        # Refreshes expiring Shopify tokens through the outbound client, in whatever process opened the store.
        self.shopify_tokens = ShopifyTokens(self, settings, outbound.refresh_client)
        # The SQLAlchemy engine the ORM models run on: for the service's other tables, never tokens.
        self.engine = engine
        self._loading: dict[str, _Load] = {}
        self._queries = 0  # cache misses that went to the database (a PostgreSQL batch counts once)
        self._loads: Batcher[_Load, Found] = Batcher(self._load_batch, isolate_failures=False)
        self.bulk = Bulk(self, backend, keyring)  # what operator jobs do to the whole table
        self.verdicts = Verdicts(self, backend, keyring)  # health as stored, and what the sweep reads
        backend.writes.observer = metrics.observe_write_batch
        self._loads.observer = metrics.observe_read
        # Every change records its events with it (vault/events.py); `actor` is who this process is.
        self.recorder = Recorder(keyring, Actor.of(actor))
        self.event_log = EventLog(self, backend)

    # --- opening ---------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        target: str | Settings,
        *,
        check_schema: bool = True,
        cache_size: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        actor: str = events.BOT,
    ) -> AsyncIterator[TokenStore]:
        """A store on a database URL (any form DATABASE_URL takes; keys and provider settings from the
        environment and .env) or on a Settings object, in any process. A SQLite file that does not exist is
        refused (DatabaseMissing): only migrations create a database.

        http_client: the client Shopify refreshes go through (default: one built from the settings on
        first use, closed with the store). transport: what the store's own clients (refreshes, and
        shopify_client/graph_client) send through (default: httpx's, pooled). actor: who this process's
        changes are by in the event log (web, bot, sweep, webhook, cli; default bot)."""
        if isinstance(target, str):
            target = Settings.from_environ().with_database(normalize_database_url(target))
        settings = target
        keyring = KeyRing.from_settings(settings)

        redact_http_logs()  # httpx logs request URLs, and Graph's carry the Page token
        engine = create_engine(settings.database_url, keyring=keyring)
        cache = TokenCache() if cache_size is None else TokenCache(cache_size)
        store: TokenStore | None = None
        outbound = Outbound(settings, http_client=http_client, transport=transport)
        try:
            try:
                if check_schema:
                    await require_head(engine)
                path = sqlite_file(settings.database_url)
                if engine.dialect.name == "sqlite":
                    if path is None:
                        raise SettingsError("The vault needs a SQLite file, not an in-memory database.")
                    backend: Backend = SQLiteBackend(path, keyring, cache)
                else:
                    backend = PostgresBackend(settings.database_url, cache, engine)
                store = cls(
                    backend,
                    engine=engine,
                    keyring=keyring,
                    cache=cache,
                    settings=settings,
                    outbound=outbound,
                    actor=actor,
                )
                if isinstance(backend, PostgresBackend):
                    await backend.start()  # listening before the first read, so the cache serves at once
            except Exception as error:  # the database down at open: said with its host and port
                failure = unavailable(error, settings.database_url)
                if failure is None:
                    raise
                raise failure from None
            yield store
        finally:
            if store is not None:
                await store.aclose()
            await outbound.aclose()
            await engine.dispose()

    async def aclose(self) -> None:
        """Let queued writes commit, then close the vault's connections (open() does this on exit)."""
        await self.verdicts.aclose()
        await self._loads.drain()
        await self._backend.aclose()

    async def check_schema(self) -> None:
        await require_head(self.engine)

    async def ping(self) -> None:
        """One round trip to the database: raises when it does not answer."""
        await self._fetch("SELECT 1", {})

    # --- the seed's API --------------------------------------------------------------------------

    async def store_token(self, key: str, value: str, type: str = "token", **metadata: Any) -> None:
        await self.store_tokens([TokenWrite(key, value, type, metadata)])

    async def get_token(self, key: str) -> str | None:
        entry = await self._entry(key)
        return None if entry is None else entry.value

    async def get_all_tokens_by_type(self, type: str) -> dict[str, str]:
        return {key: value async for key, value in self.iter_tokens_by_type(type)}

    async def delete_token(self, key: str) -> bool:
        return await self.delete_tokens([validate_key(key)]) == 1

    # --- more of the same ------------------------------------------------------------------------

    async def iter_tokens_by_type(self, type: str) -> AsyncIterator[tuple[str, str]]:
        """(key, plaintext) of every row of a type, in key order, a page at a time: memory stays bounded
        and the event loop is never held more than a few milliseconds."""
        after = ""
        while True:
            rows = await self._scan(sql.VALUES_BY_TYPE, {"type": type, "after": after, "limit": PAGE_SIZE})
            for start in range(0, len(rows), DECRYPT_CHUNK):
                for key, ciphertext in rows[start : start + DECRYPT_CHUNK]:
                    yield key, self._ring.decrypt(ciphertext, key_name=key)
                await asyncio.sleep(0)
            if len(rows) < PAGE_SIZE:
                return
            after = rows[-1][0]

    async def store_tokens(
        self, writes: Sequence[TokenWrite], *, event: str | None = events.TOKEN_SET, by: Actor | None = None
    ) -> None:
        """Write several rows in one transaction: all of them land, or none, each with its `event`."""
        for write in writes:
            validate_write(write)
        if writes:
            recorded = [] if event is None else [_written(event, write) for write in writes]
            await self.write(plan_writes(writes, ring=self._ring, now=utcnow()), events=recorded, by=by)

    async def delete_tokens(
        self,
        keys_to_delete: Iterable[str],
        *,
        event: str = events.TOKEN_DELETED,
        by: Actor | None = None,
        reason: str | None = None,
    ) -> int:
        """Delete rows; one `event` per connection that had any. Returns the rows deleted."""
        wanted = [validate_key(key) for key in keys_to_delete]
        if not wanted:
            return 0
        unit = deletions.delete_keys(self.recorder, wanted, kind=event, by=by, reason=reason)
        return (await self.read_write(unit)).result  # type: ignore[no-any-return]

    async def get_record(self, key: str) -> TokenRecord | None:
        validate_key(key)
        records = self._records(await self._fetch(sql.RECORD, {"key": key}))
        return records[0] if records else None

    async def account_tokens(self, account_uuid: str) -> list[TokenRecord]:
        """Everything one account owns, decrypted, in one query on the indexed account column."""
        return self._records(await self._fetch(sql.ACCOUNT_RECORDS, {"account": account_uuid}))

    async def list_tokens(self, type: str | None = None, *, account_uuid: str | None = None) -> list[TokenRecord]:
        """Rows' metadata, values not decrypted (listings and status pages never show them)."""
        if account_uuid is not None:
            rows = await self._fetch(sql.ACCOUNT_LISTING, {"account": account_uuid})
            return [record for record in map(_listed, rows) if type is None or record.type == type]
        return [record async for page in self.listing_pages(type) for record in page]

    async def listing_pages(self, type: str | None = None) -> AsyncIterator[list[TokenRecord]]:
        """list_tokens' rows a page (PAGE_SIZE) at a time, in key order: a walk of the whole table in
        bounded memory, each page a short hold of the event loop (the connections gauge walks it so)."""
        after = ""
        while True:
            params: dict[str, Any] = {"after": after, "limit": PAGE_SIZE}
            if type is not None:
                params["type"] = type
            rows = await self._scan(sql.LISTING if type is None else sql.LISTING_BY_TYPE, params)
            yield [_listed(row) for row in rows]
            if len(rows) < PAGE_SIZE:
                return
            after = rows[-1][0]

    async def account_of(self, key: str) -> str | None:
        rows = await self._fetch(sql.ACCOUNT_OF, {"key": validate_key(key)})
        return rows[0][0] if rows else None

    async def create_account(self) -> str:
        account = str(uuid.uuid4())
        await self.write(Plan([Step(sql.ENSURE_ACCOUNT, [{"account": account, "now": utcnow()}])]))
        return account

    async def set_metadata(self, key: str, **fields: Any) -> bool:
        """Set metadata columns (provider, scopes, expires_at ...) of a stored row, its value and
        `updated_at` untouched; False when no row has this key."""
        validate_key(key)
        unknown = set(fields) - METADATA_COLUMNS
        if unknown or not fields:
            raise InvalidInput(f"Unknown token fields: {', '.join(sorted(unknown)) or '(none given)'}.")
        (found,) = await self.write(plan_metadata(key, fields, self._ring))
        return bool(found)

    async def link_to_account(self, key: str, account_uuid: str) -> bool:
        validate_key(key)
        if keys.as_uuid(account_uuid) != account_uuid:
            raise InvalidInput("An account UUID must be a lower-case UUID.")
        now = utcnow()
        plan = Plan(
            [
                Step(sql.ENSURE_ACCOUNT, [{"account": account_uuid, "now": now}]),
                Step(sql.RELINK_TOKEN, [{"key": key, "account": account_uuid, "now": now}], returning=True),
            ]
        )
        _ensured, linked = await self.write(plan)
        return bool(linked)

    async def connect_shop(self, *, shop_key: str, token: TokenWrite, session_account: str | None) -> Joined:
        """Store a connected shop's token under the account its identity allows (vault/linking.py)."""
        validate_write(token)
        unit = linking.connect_shop(
            self.recorder, utcnow(), shop_key=shop_key, token=token, session_account=session_account
        )
        return (await self.read_write(unit)).result  # type: ignore[no-any-return]

    async def connect_facebook(
        self,
        *,
        user_id: str,
        user_token: TokenWrite,
        pages: Sequence[tuple[str, TokenWrite]],
        session_account: str | None,
    ) -> Joined:
        """Store a Facebook grant's user token and the Pages its user may connect (vault/linking.py)."""
        for write in (user_token, *(write for _, write in pages)):
            validate_write(write)
        unit = linking.connect_facebook(
            self.recorder,
            utcnow(),
            user_id=user_id,
            user_token=user_token,
            pages=pages,
            session_account=session_account,
        )
        return (await self.read_write(unit)).result  # type: ignore[no-any-return]

    async def preview_facebook(self, *, user_id: str, page_ids: Sequence[str], session_account: str | None) -> Joined:
        """What connect_facebook would decide for this grant and browser, writing nothing (vault/linking.py)."""
        unit = linking.facebook_preview(user_id=user_id, page_ids=page_ids, session_account=session_account)
        return (await self.read_write(unit)).result  # type: ignore[no-any-return]

    async def forget_shop(
        self,
        shop_key: str,
        *,
        with_link: bool,
        event: str,
        not_after: datetime | None = None,
        by: Actor | None = None,
        erase_history: bool = False,
        reason: str | None = None,
        removed: str | None = None,
    ) -> int:
        """Delete a shop's token (and, with_link, its account link) with its `event`; an uninstall older
        than the stored token (`not_after` before its last write) deletes nothing. erase_history: the
        shop's earlier events go too (shop/redact). removed: the reason code a provider removed it for
        ("uninstalled"), which the merchant's page then tells once. Returns the rows deleted."""
        unit = deletions.forget_shop(
            self.recorder,
            shop_key,
            with_link=with_link,
            not_after=not_after,
            kind=event,
            by=by,
            erase_history=erase_history,
            reason=reason,
            removed=removed,
        )
        return (await self.read_write(unit)).result  # type: ignore[no-any-return]

    async def forget_facebook_user(
        self, user_id: str, *, erase_links: bool, event: str, by: Actor | None = None, removed: str | None = None
    ) -> int:
        """Delete a Facebook user's token and the Page tokens their grant gave, with `event` for each
        (erase_links: the Pages' links too, and every earlier event of them); removed: as forget_shop's,
        for each Page. Returns the rows deleted."""
        unit = deletions.forget_facebook_user(
            self.recorder, user_id, erase_links=erase_links, kind=event, by=by, removed=removed
        )
        return (await self.read_write(unit)).result  # type: ignore[no-any-return]

    async def forget_page(self, page_id: str, *, event: str, removed: str, by: Actor | None = None) -> int:
        """Delete a Page's token, which a provider removed, with `event` (removed: as forget_shop's).
        Returns the rows deleted."""
        unit = deletions.forget_page(self.recorder, _page_id(page_id), kind=event, by=by, removed=removed)
        return (await self.read_write(unit)).result  # type: ignore[no-any-return]

    async def check_keys(self) -> None:
        """Open the most recently written value with the key ring; when no key in it does, raise one line
        naming the settings (a wrong key must stop a command before it writes or serves)."""
        rows = await self._scan(sql.NEWEST, {})
        if not rows:
            return
        key, ciphertext = rows[0]
        try:
            self._ring.decrypt(ciphertext, key_name=key)
        except UndecryptableValue:
            raise SettingsError(
                f"No key in TOKEN_ENCRYPTION_KEYS (nor the one derived from STATE_TOKEN_SECRET) opens the stored "
                f"value of {key}: set TOKEN_ENCRYPTION_KEYS to the keys this database was written with."
            ) from None

    # --- Shopify tokens --------------------------------------------------------------------------

    async def get_shopify_token(self, shop: str, *, refused: str | None = None) -> str | None:
        """A working Shopify access token for the shop (name or domain); one not due for refresh costs
        what get_token costs, one that expires within REFRESH_MARGIN is refreshed first.

        refused: the token Shopify just answered 401 to: it is refreshed, unless another one was stored
        meanwhile, which is handed back instead."""
        key = _shop_token_key(shop)
        if refused is None:
            entry = await self._entry(key, need_due=True)
            if entry is None:
                return None
            self.verdicts.note_used(key)  # the sweep refreshes ahead the shops bots use
            if time.time() < entry.refresh_due:  # type: ignore[operator]
                return entry.value
        return await self.shopify_tokens.get(shop, refused=refused)

    async def mark_token_dead(
        self, key: str, value: str | None = None, *, reason: str = "token_invalid", by: Actor | None = None
    ) -> bool:
        """Record that the provider refused the token under `key` (reason: a code of health.REASONS), as
        `tokens check --online` and the bot's clients do: the connection needs reconnecting (a
        `marked_dead` event when it did not already), unless the row was rewritten meanwhile (value: the
        token that was refused, if known). True when the row held it."""
        validate_key(key)
        return await self.verdicts.mark_dead(key, health.verdict(reason), token=value, by=by)

    # --- the bot's side --------------------------------------------------------------------------

    async def page_connection(self, page_id: str) -> PageConnection | None:
        """A Page's token, account and store (vault/connections.py); None when no token is stored for it."""
        found = await self._derived(PAGE, page_id)
        if found is not MISSING:
            return found  # type: ignore[return-value]
        page_id = _page_id(page_id)  # only valid ids are ever cached, so a hit needs no check
        statement, params = connections.page_query(page_id)
        return await self._load_derived(PAGE, page_id, statement, params, page_id)  # type: ignore[no-any-return]

    async def shop_connection(self, shop: str) -> ShopConnection | None:
        """A shop's token, valid now (refreshed first if due), its account and the account's Pages; the
        shop as "acme" or "acme.myshopify.com". None when no token is stored for it."""
        domain, name = _shop_names(shop)
        cached = await self._shop_entry(domain, name)
        if cached is None:
            return None
        self.verdicts.note_used(keys.shopify_token_key(name))
        if time.time() < cached.entry.refresh_due or cached.connection.health == health.NEEDS_RECONNECT:  # type: ignore[operator]
            return cached.connection  # (a store that needs reconnecting says so: nothing to refresh)
        try:
            token = await self.shopify_tokens.get(domain)  # refreshed, or still valid while it cannot be
        except TokenRevoked:
            return await self._shop_entry(domain, name)  # now says it needs reconnecting, and why
        cached = await self._shop_entry(domain, name)
        if cached is None or token is None:
            return None
        if cached.connection.token == token:
            return cached.connection
        return dataclasses.replace(cached.connection, token=token)

    async def _shop_entry(self, domain: str, name: str) -> CachedShop | None:
        found = await self._derived(SHOP, name)
        if found is not MISSING:
            return found  # type: ignore[return-value]
        statement, params = connections.shop_query(name)
        return await self._load_derived(SHOP, name, statement, params, domain)  # type: ignore[no-any-return]

    @contextlib.asynccontextmanager
    async def shopify_client(self, shop: str) -> AsyncIterator[httpx.AsyncClient]:
        """An httpx.AsyncClient on the shop's Admin API (SHOPIFY_API_VERSION): the token goes in its
        header, is refreshed on a 401 (one retry), and a throttled answer is waited out once."""
        domain = normalize_shop(shop)
        if await self.get_shopify_token(domain) is None:
            raise NotFound(f"No Shopify token is stored for {domain}: install the app on that store first.")

        async def token(refused: str | None) -> str:
            found = await self.get_shopify_token(domain, refused=refused)
            if found is None:
                raise NotFound(f"The Shopify token of {domain} was deleted (the app was uninstalled).")
            return found

        async def dead(renewed: str) -> None:
            await self.mark_token_dead(_shop_token_key(domain), renewed, reason="token_refused")

        auth = ShopifyAuth(domain, token, dead=dead)
        base, within = self._outbound.shopify_base_url(domain), self._outbound.shopify_admin(domain)
        async with self._outbound.client(base_url=base, auth=auth, within=within, provider="Shopify") as client:
            yield client

    @contextlib.asynccontextmanager
    async def graph_client(self, page_id: str) -> AsyncIterator[httpx.AsyncClient]:
        """An httpx.AsyncClient on the Graph API (FACEBOOK_GRAPH_VERSION) for the Page: its token and
        appsecret_proof go on every request; error 190 marks the token dead and raises TokenRevoked."""
        page_id = _page_id(page_id)
        if self.settings.facebook_app_secret is None:
            raise NotConfigured("FACEBOOK_APP_SECRET is not set: Graph calls need it for appsecret_proof.")
        if await self.page_connection(page_id) is None:
            raise NotFound(f"No token is stored for Page {page_id}: connect it first.")
        key = keys.page_token_key(page_id)

        async def token() -> str:
            page = await self.page_connection(page_id)
            if page is None:
                raise NotFound(f"The token of Page {page_id} was deleted (the app was removed on Facebook).")
            found = page.assessment
            if found.state == health.NEEDS_RECONNECT:
                # Known dead (Graph said 190, or debug_token did): no request is sent.
                raise TokenRevoked(f"{found.sentence(f'Page {page_id}')} Connect the Page again.", reason=found.reason)
            return page.token

        async def dead(refused: str, reason: str) -> None:
            await self.mark_token_dead(key, refused, reason=reason)

        auth = GraphAuth(page_id, token, str(self.settings.facebook_app_secret), dead)
        base, within = self._outbound.graph_base_url(), self.settings.facebook_graph_base_url
        async with self._outbound.client(base_url=base, auth=auth, within=within, provider="Graph") as client:
            yield client

    async def store_refreshed(self, write: TokenWrite, *, expected: str, by: Actor | None = None) -> bool:
        """Store a refreshed pair, with its `refreshed` event, while the row still holds `expected` (the
        ciphertext of the token it replaces); False when it was rewritten meanwhile (then no event). A
        row that had failed refreshes or a verdict is clean again: `recovered` too."""
        validate_write(write)
        now = utcnow()

        def decide(found: list[list[Any]]) -> tuple[Plan, bool]:
            if not found[0] or found[0][0][0] != expected:
                return Plan(), False
            _value, verdict, failures = found[0][0]
            said = [_written(events.REFRESHED, write)]
            if verdict is not None or failures:
                said.append(Event(events.RECOVERED, key=write.key, detail={"failed_refreshes": failures or 0}))
            plan = plan_writes([write], ring=self._ring, now=now)
            return self.recorder.record(plan, said, by=by, now=now), True

        unit = ReadWrite([(sql.REFRESH_ROW, {"key": write.key})], decide)
        return (await self.read_write(unit)).result  # type: ignore[no-any-return]

    async def take_refresh_lease(self, key: str, *, now: datetime, until: datetime) -> bool:
        """Take the row's refresh lease unless another process holds one that has not run out."""
        (taken,) = await self.write(plan_take_lease(key, now, until))
        return bool(taken)

    async def end_refresh_lease(self, key: str) -> None:
        await self.write(plan_end_lease(key))

    # --- writes for the rest of the service ------------------------------------------------------

    async def write(self, plan: Plan, *, events: Sequence[Event] = (), by: Actor | None = None) -> list[list[Any]]:
        """Run a plan in the writer's next transaction, with the events it makes (recorded in the same
        transaction); what its returning steps returned, once committed."""
        if events:
            self.recorder.record(plan, events, by=by)
        ticket = self._cache.reserve(plan.entries)
        with DATABASE_ERRORS:
            return await self._backend.writes.submit(Write(plan, ticket))  # type: ignore[arg-type]

    async def read_write(self, unit: ReadWrite) -> Decided:
        """Read, decide and write in one transaction of the writer (see ReadWrite)."""
        if unit.entries:
            unit = dataclasses.replace(unit, ticket=self._cache.reserve(unit.entries))
        with DATABASE_ERRORS:
            return await self._backend.writes.submit(unit)  # type: ignore[arg-type]

    async def run_write(self, job: Job) -> Any:
        """Run `job` (a function of a synchronous Connection) in a write transaction, for the service's
        tables outside the vault (OAuth state, webhook bookkeeping); return what it returned once committed.
        On SQLite it shares the writer's batches with token writes; a job that raises fails alone."""
        with DATABASE_ERRORS:
            return await self._backend.run_job(job)

    async def query(self, statement: str, params: dict[str, Any]) -> list[Any]:
        """One read of the service's own small tables outside the vault (API keys) on the vault's reader:
        inline on SQLite, the reader connection on PostgreSQL; what was committed before it began."""
        return await self._fetch(statement, params)

    async def _fetch(self, statement: str, params: dict[str, Any]) -> list[Any]:
        with DATABASE_ERRORS:
            return await self._backend.fetch(statement, params)

    async def _scan(self, statement: str, params: dict[str, Any]) -> list[Any]:
        with DATABASE_ERRORS:
            return await self._backend.scan(statement, params)

    # --- the event log ---------------------------------------------------------------------------

    async def record(self, recorded: Sequence[Event], *, by: Actor | None = None) -> None:
        """Events with no change to tokens in their transaction: an operator job's summary."""
        await self.write(Plan(), events=recorded, by=by)

    async def events(
        self,
        since: datetime | int | None = None,
        *,
        account: str | None = None,
        provider: str | None = None,
        subject: str | None = None,
        kind: str | None = None,
    ) -> AsyncIterator[LoggedEvent]:
        """Events as they are committed, by any process, in order, forever: `async for event in
        store.events(): ...`. since: None, only what comes from now on; a datetime, from then; an int,
        after that event's `seq` (to resume where a listener stopped)."""
        filters = Filters(account, provider, subject, kind, since if isinstance(since, datetime) else None)
        async with Wakeups(self.settings.database_url) as wakeups:  # listening before the first read
            after = since if isinstance(since, int) else 0
            if since is None:
                after = await self.event_log.newest_seq()
            async for event in follow(self.event_log, wakeups, filters, after=after):
                yield event

    # --- reading through the cache ---------------------------------------------------------------

    async def _derived(self, kind: str, name: str) -> Any:
        """A derived entry (vault/connections.py) the cache may serve, or MISSING."""
        found = self._cache.derived(kind, name)
        if found is not MISSING and (self._fresh() or await self._confirm()):
            return self._cache.derived(kind, name)  # the freshness check may have dropped it
        return MISSING

    async def _load_derived(self, kind: str, name: str, statement: str, params: dict[str, Any], subject: str) -> Any:
        """A derived entry from its one query, then cached (as _entry does for a token)."""
        with DATABASE_ERRORS:
            return await self._load_derived_now(kind, name, statement, params, subject)

    async def _load_derived_now(
        self, kind: str, name: str, statement: str, params: dict[str, Any], subject: str
    ) -> Any:
        build = connections.page_connection if kind == PAGE else connections.shop_connection
        self._queries += 1
        if self._backend.inline_reads:
            # SQLite: read and fill in one go, on the event loop; nothing runs in between.
            built = build(subject, self._backend.read(statement, params), self._ring)
            self._cache.put_derived(kind, name, built)
            return built
        ticket = self._cache.reserve_derived(kind, name)
        built = build(subject, await self._backend.fetch(statement, params), self._ring)
        if self._backend.may_fill():
            self._cache.fill_derived(kind, name, ticket, built)
        return built

    async def _entry(self, key: str, *, need_due: bool = False) -> Entry | None:
        entry = self._cache.get(key)
        # A hit is served only once the backend says the cache is fresh (SQLite checks data_version,
        # which may drop the entry; PostgreSQL, past HIT_VALIDITY since its last round trip, makes one
        # first, so a reader that never yields still hears other processes' notifications); a miss
        # reads the database, which is fresh by definition.
        if entry is not MISSING and (self._fresh() or await self._confirm()):
            entry = self._cache.get(key)
            if entry is not MISSING and not (need_due and entry is not None and entry.refresh_due is None):  # type: ignore[union-attr]
                return entry  # type: ignore[return-value]
        validate_key(key)
        with DATABASE_ERRORS:
            return await self._miss(key)

    def _fresh(self) -> bool:
        try:  # a try costs nothing until it catches; `with` would cost every cache hit
            return self._backend.fresh()
        except Exception as error:
            raise_database_error(error)

    async def _confirm(self) -> bool:
        with DATABASE_ERRORS:
            return await self._backend.confirm()

    async def _miss(self, key: str) -> Entry | None:
        if self._backend.inline_reads:
            # SQLite: read and fill in one go, on the event loop; nothing runs in between.
            self._queries += 1
            began = time.perf_counter()
            row = self._backend.read_entry(key)
            metrics.observe_read(1, time.perf_counter() - began)
            found = None if row is None else self._opened(row)
            if not isinstance(found, BaseException):
                self._cache.put(key, found)
        else:
            found = await self._shared_load(key)
        if isinstance(found, BaseException):
            raise found
        return found

    async def _shared_load(self, key: str) -> Found:
        """PostgreSQL: a miss joins a load of the same key that read nothing stale; else it loads, at once
        when nothing else is loading (in this task), else in the next batch with the others queued."""
        load = self._loading.get(key)
        if load is not None and (load.ticket is None or self._cache.holds(key, load.ticket)):
            try:
                return await asyncio.shield(load.future)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                # The load's own caller gave up; this one loads for itself.
        load = _Load(key, asyncio.get_running_loop().create_future())
        load.future.add_done_callback(_retrieve)
        self._loading[key] = load
        try:
            found = await self._loads.submit(load)
        except BaseException as error:
            if isinstance(error, asyncio.CancelledError):
                load.future.cancel()
            else:
                load.future.set_exception(error)
            raise
        finally:
            if self._loading.get(key) is load:
                del self._loading[key]
        load.future.set_result(found)
        return found

    async def _load_batch(self, loads: Sequence[_Load]) -> list[Found]:
        wanted = list(dict.fromkeys(load.key for load in loads))
        self._queries += 1
        ticket = self._cache.reserve(wanted)
        for load in loads:
            load.ticket = ticket
        if len(wanted) == 1:
            rows = await self._fetch(sql.LOAD_ONE, {"key": wanted[0]})
        else:
            rows = await self._fetch(sql.LOAD, {"keys": wanted})
        found = self._found(wanted, rows)
        if self._backend.may_fill():
            self._fill(ticket, found)
        return [found[load.key] for load in loads]

    def _found(self, wanted: list[str], rows: Iterable[Any]) -> dict[str, Found]:
        found: dict[str, Found] = dict.fromkeys(wanted)
        for row in rows:
            found[row[0]] = self._opened(row)
        return found

    def _opened(self, row: Sequence[Any]) -> Entry | UndecryptableValue:
        """A row of sql.LOAD as a cache entry; a value no key opens fails only its own readers."""
        key, ciphertext, expires_at, refreshable = row
        try:
            value = self._ring.decrypt(ciphertext, key_name=key)
        except UndecryptableValue as error:
            return error
        if not refreshable:
            return Entry(value, math.inf)
        return Entry.of(value, sql.from_disk(expires_at), True)

    def _fill(self, ticket: Ticket, found: dict[str, Found]) -> None:
        self._cache.fill(ticket, {key: entry for key, entry in found.items() if not isinstance(entry, BaseException)})

    def _records(self, rows: Iterable[Any]) -> list[TokenRecord]:
        records = []
        for *plain, value, refresh in rows:
            fields = _fields(plain)
            fields["value"] = self._ring.decrypt(value, key_name=fields["key"])
            if refresh is not None:
                fields["refresh_token"] = self._ring.decrypt(refresh, key_name=fields["key"] + " (refresh token)")
            records.append(TokenRecord(**fields, refreshable=refresh is not None))
        return records

    @property
    def stats(self) -> dict[str, int]:
        """Counters for benchmarks and tests: cache hits and misses, the queries misses made, the round
        trips made only to vouch for hits (PostgreSQL: Freshness), write batches."""
        return {
            "hits": self._cache.hits,
            "misses": self._cache.misses,
            "queries": self._queries,
            "vouching_round_trips": self._backend.freshness.round_trips,
            "write_batches": self._backend.writes.batches,
            "cached": len(self._cache),
        }


def _written(kind: str, write: TokenWrite) -> Event:
    """The event of a token write: its account (a UUID entry's is its value) and name where it names them."""
    account = write.metadata.get("account_uuid")
    if account is None and write.type == "uuid":
        account = keys.as_uuid(write.value)
    token = write.value if write.type == "token" else None
    return Event(kind, key=write.key, account=account, name=write.metadata.get("name"), token=token)


def _page_id(page_id: str) -> str:
    if not isinstance(page_id, str) or not page_id.isascii() or not page_id.isdigit() or len(page_id) > 64:
        raise InvalidInput("A Page id is the Page's number, as a string of digits.")
    return page_id


@functools.lru_cache(maxsize=4096)
def _shop_names(shop: str) -> tuple[str, str]:
    """(domain, shop key) of a shop name as the bot got it, normalised once each (raises InvalidShop)."""
    domain = normalize_shop(shop)
    return domain, shop_key(domain)


@functools.lru_cache(maxsize=4096)
def _shop_token_key(shop: str) -> str:
    # Shop names arrive as the bot got them ("acme", "acme.myshopify.com"): normalised once each.
    return keys.shopify_token_key(shop_key(shop))


def _retrieve(future: asyncio.Future[Found]) -> None:
    # A load nobody joined: its outcome was handed to its caller directly.
    if not future.cancelled():
        future.exception()


_DATETIMES = frozenset(name for name in RECORD_COLUMNS if name.endswith("_at") or name.endswith("_until"))


def _fields(plain: Sequence[Any]) -> dict[str, Any]:
    fields = dict(zip(RECORD_COLUMNS, plain, strict=True))
    for name in _DATETIMES:
        fields[name] = sql.from_disk(fields[name])
    return fields


def _listed(row: Sequence[Any]) -> TokenRecord:
    *plain, refreshable = row
    return TokenRecord(value=None, **_fields(plain), refreshable=bool(refreshable))


__all__ = ["REFRESH_MARGIN", "PageConnection", "ShopConnection", "TokenRecord", "TokenStore", "TokenWrite"]
