"""The in-process cache of decrypted tokens in front of the database (DESIGN.md, "The vault").

A hit is a dict lookup. Entries are bounded (least recently used go first) and absences are cached
too (as None). A load reserves its keys with a ticket before it reads; an invalidation takes the
ticket back, so a load that read before a change committed answers its own callers but never fills.

Beside the tokens it keeps derived entries (vault/connections.py): a Page's connection and a shop's,
each built from several rows. A change to a shop's row drops that shop's entry and every Page's; a
change to a Page's row, that Page's and every shop's: which shop a Page sells, and which Pages a
shop has, can change with a row the entry never read.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from service import keys

DEFAULT_MAX_SIZE = 20_000
# A Shopify token that expires within this is refreshed before it is handed out.
REFRESH_MARGIN = timedelta(minutes=5)
MISSING: Final = object()  # not in the cache (None is a cached "no such key")
# Kinds of derived entries, named by the Page id or the shop key they describe.
PAGE, SHOP = "page", "shop"


@dataclass(frozen=True, slots=True)
class Entry:
    value: str
    # When (Unix time) a refresh is due: expiry minus REFRESH_MARGIN, if a refresh token is stored;
    # inf when it never is; None when this process does not know (a write that named neither).
    refresh_due: float | None = None

    @classmethod
    def of(cls, value: str, expires_at: datetime | None, refreshable: bool) -> Entry:
        if not refreshable or expires_at is None:
            return cls(value, math.inf)
        return cls(value, (expires_at - REFRESH_MARGIN).timestamp())


class Ticket:
    """A load's claim on its keys: it may fill them only while it still holds them."""

    __slots__ = ()


class TokenCache:
    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._entries: OrderedDict[str, Entry | None] = OrderedDict()
        self._tickets: dict[str, Ticket] = {}
        self.hits = self.misses = 0
        self._derived: dict[str, OrderedDict[str, object]] = {PAGE: OrderedDict(), SHOP: OrderedDict()}
        self._derived_tickets: dict[str, dict[str, Ticket]] = {PAGE: {}, SHOP: {}}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | object | None:
        """The entry (None: known absent), or MISSING."""
        entry = self._entries.get(key, MISSING)
        if entry is MISSING:
            self.misses += 1
        else:
            self._entries.move_to_end(key)
            self.hits += 1
        return entry

    def reserve(self, keys: Iterable[str]) -> Ticket:
        ticket = Ticket()
        for key in keys:
            self._tickets[key] = ticket
        return ticket

    def put(self, key: str, entry: Entry | None) -> None:
        """Store what was just read where nothing can have changed it since (SQLite's inline reads).
        A write's claim on the key stays: when it settles, its newer entry wins."""
        self._put(key, entry)

    def holds(self, key: str, ticket: Ticket) -> bool:
        return self._tickets.get(key) is ticket

    def fill(self, ticket: Ticket, found: Mapping[str, Entry | None]) -> None:
        """Store what a load found, for the keys it still holds."""
        for key, entry in found.items():
            if self._tickets.get(key) is ticket:
                del self._tickets[key]
                self._put(key, entry)

    def settle(self, ticket: Ticket | None, written: Mapping[str, Entry | None], touched: Iterable[str]) -> None:
        """After this process committed a write: keys it knows the new entry of (and still holds) are
        filled; every other key it touched is dropped, along with any load that read before the commit."""
        touched = list(touched)
        self._drop_derived(touched)
        for key in touched:
            entry = written.get(key, MISSING)
            if ticket is not None and entry is not MISSING and self._tickets.get(key) is ticket:
                del self._tickets[key]
                self._put(key, entry)  # type: ignore[arg-type]
            else:
                self._entries.pop(key, None)
                self._tickets.pop(key, None)

    def invalidate(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        self._drop_derived(keys)
        for key in keys:
            self._entries.pop(key, None)
            self._tickets.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
        self._tickets.clear()
        for kind in (PAGE, SHOP):
            self._derived[kind].clear()
            self._derived_tickets[kind].clear()

    # --- derived entries ---------------------------------------------------------------------------

    def derived(self, kind: str, name: str) -> object:
        """A derived entry (None: known absent), or MISSING."""
        entries = self._derived[kind]
        entry = entries.get(name, MISSING)
        if entry is not MISSING:
            entries.move_to_end(name)
        return entry

    def reserve_derived(self, kind: str, name: str) -> Ticket:
        ticket = Ticket()
        self._derived_tickets[kind][name] = ticket
        return ticket

    def fill_derived(self, kind: str, name: str, ticket: Ticket, entry: object) -> None:
        """Store what a load built, unless a change to a row it may depend on came in since it reserved."""
        if self._derived_tickets[kind].get(name) is ticket:
            del self._derived_tickets[kind][name]
            self.put_derived(kind, name, entry)

    def put_derived(self, kind: str, name: str, entry: object) -> None:
        entries = self._derived[kind]
        entries[name] = entry
        entries.move_to_end(name)
        if len(entries) > self.max_size:
            entries.popitem(last=False)

    def _drop_derived(self, changed: Iterable[str]) -> None:
        if not any(self._derived.values()) and not any(self._derived_tickets.values()):
            return  # the common case in a process that never asks for connections: no key parsing
        for key in changed:
            info = keys.describe_key(key)
            if info is None or info.uuid_key is None:
                continue  # not a shop's or a Page's row (a Facebook user's token, say)
            own, other = (SHOP, PAGE) if info.provider == keys.SHOPIFY else (PAGE, SHOP)
            self._derived[own].pop(info.subject, None)
            self._derived_tickets[own].pop(info.subject, None)
            self._derived[other].clear()
            self._derived_tickets[other].clear()

    def _put(self, key: str, entry: Entry | None) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_size:
            self._entries.popitem(last=False)
