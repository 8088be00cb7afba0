"""Which account a connected shop or Page joins (DESIGN.md, "Accounts: who may enter one").

An account is entered only through the identity that created each of its links: a shop's link through
that shop's own OAuth, a Page's link (and a Facebook user token) through the Facebook user who granted
it (`granted_by`). A callback never moves a link, never overwrites another user's Page token and never
merges two accounts; what it may not do, it refuses and names. Each decision reads and writes in one
writer transaction (service/vault/writes.py, ReadWrite), with the events of what it stored
(`connected`, or `reconnected` for a connection that had a token or a link already).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service import keys
from service.crypto import KeyRing
from service.vault import sql
from service.vault.events import CONNECTED, RECONNECTED, Event, Recorder
from service.vault.planner import Plan, plan_writes
from service.vault.schema import TokenWrite
from service.vault.writes import ReadWrite

SHOP_ELSEWHERE = "shop_owned_elsewhere"
FACEBOOK_USER_ELSEWHERE = "facebook_user_owned_elsewhere"


@dataclass(frozen=True)
class Joined:
    """What a callback's connect did: the account it wrote to, or a conflict and nothing written."""

    account: str | None
    conflict: str | None = None  # SHOP_ELSEWHERE | FACEBOOK_USER_ELSEWHERE, when account is None
    refused_pages: tuple[str, ...] = ()  # Pages linked by another Facebook user: left as they were


@dataclass(frozen=True)
class _Row:
    account: str | None
    granted_by: str | None


def _reads(wanted: Sequence[str], session_account: str | None) -> list[tuple[str, dict[str, Any]]]:
    return [(sql.LINKS, {"keys": list(wanted)}), (sql.ACCOUNT_EXISTS, {"account": session_account or ""})]


def _rows(found: list[list[Any]]) -> tuple[dict[str, _Row], bool]:
    rows = {key: _Row(account, granted_by) for key, account, granted_by in found[0]}
    return rows, bool(found[1])


def _linked(rows: dict[str, _Row], link_key: str, token_key: str) -> str | None:
    # The link names the account; a token left without its link (deleted by hand) still holds it.
    for key in (link_key, token_key):
        row = rows.get(key)
        if row is not None and row.account is not None:
            return row.account
    return None


def _plan(
    ring: KeyRing, now: datetime, account: str, writes: Sequence[TokenWrite], links: Sequence[TokenWrite]
) -> Plan:
    placed = [
        TokenWrite(write.key, write.value, write.type, {**write.metadata, "account_uuid": account})
        for write in [*writes, *links]
    ]
    return plan_writes(placed, ring=ring, now=now)


def _link(key: str, account: str, granted_by: str | None = None) -> TokenWrite:
    return TokenWrite(key, account, "uuid", {} if granted_by is None else {"granted_by": granted_by})


def _connected(rows: dict[str, _Row], token: TokenWrite, link_key: str | None, account: str) -> Event:
    again = token.key in rows or (link_key is not None and link_key in rows)
    name = token.metadata.get("name")
    return Event(RECONNECTED if again else CONNECTED, key=token.key, account=account, name=name, token=token.value)


def connect_shop(
    recorder: Recorder, now: datetime, *, shop_key: str, token: TokenWrite, session_account: str | None
) -> ReadWrite:
    """Store a shop's token and link. A shop already linked keeps its account; a browser in another
    account is not joined to it (SHOP_ELSEWHERE, nothing written)."""
    link_key = keys.shopify_uuid_key(shop_key)

    def decide(found: list[list[Any]]) -> tuple[Plan, Joined]:
        rows, session_exists = _rows(found)
        linked = _linked(rows, link_key, token.key)
        session = session_account if session_exists else None
        if linked is not None and session is not None and session != linked:
            return Plan(), Joined(None, SHOP_ELSEWHERE)
        account = linked or session or str(uuid.uuid4())
        plan = _plan(recorder.ring, now, account, [token], [_link(link_key, account)])
        recorder.record(plan, [_connected(rows, token, link_key, account)], now=now)
        return plan, Joined(account)

    return ReadWrite(_reads([link_key, token.key], session_account), decide, locks=[link_key])


def _facebook_decision(
    found: list[list[Any]],
    *,
    user_id: str,
    user_key: str,
    links: dict[str, str],
    tokens: dict[str, str],
    session_account: str | None,
) -> Joined:
    """The account a Facebook grant joins and the Pages refused in it, or a conflict (nothing written)."""
    rows, session_exists = _rows(found)

    def owner(page_id: str) -> str | None:
        # Links written before owners were recorded: the user whose grant gave the Page's token.
        for key in (links[page_id], tokens[page_id]):
            row = rows.get(key)
            if row is not None and row.granted_by is not None:
                return row.granted_by
        return None

    linked = {page_id: account for page_id in links if (account := _linked(rows, links[page_id], tokens[page_id]))}
    mine = {page_id for page_id in linked if owner(page_id) == user_id}
    # The accounts this user's identity already holds links in: their own Pages and their user token.
    known = {linked[page_id] for page_id in mine}
    user_row = rows.get(user_key)
    if user_row is not None and user_row.account is not None:
        known.add(user_row.account)
    session = session_account if session_exists else None
    if len(known) > 1 or (known and session is not None and session not in known):
        return Joined(None, FACEBOOK_USER_ELSEWHERE)
    account = next(iter(known), None) or session or str(uuid.uuid4())
    # Another user's Page stays as it is. A linked Page with no known owner (imported, say) is taken
    # only inside its own account, which this browser entered through another of its identities.
    refused = tuple(
        page_id
        for page_id, page_account in linked.items()
        if page_id not in mine and (owner(page_id) is not None or page_account != account)
    )
    return Joined(account, refused_pages=refused)


def connect_facebook(
    recorder: Recorder,
    now: datetime,
    *,
    user_id: str,
    user_token: TokenWrite,
    pages: Sequence[tuple[str, TokenWrite]],
    session_account: str | None,
) -> ReadWrite:
    """Store a Facebook user's token and the Pages of their grant that they may connect.

    `pages` pairs each Page id with its token write. A Page linked by another Facebook user is left
    as it was and listed in `refused_pages`; the others are stored. A user whose links are in another
    account than the browser's is refused as a whole (FACEBOOK_USER_ELSEWHERE, nothing written)."""
    links = {page_id: keys.page_uuid_key(page_id) for page_id, _ in pages}
    tokens = {page_id: keys.page_token_key(page_id) for page_id, _ in pages}

    def decide(found: list[list[Any]]) -> tuple[Plan, Joined]:
        joined = _facebook_decision(
            found, user_id=user_id, user_key=user_token.key, links=links, tokens=tokens, session_account=session_account
        )
        if joined.account is None:
            return Plan(), joined
        allowed = [(page_id, write) for page_id, write in pages if page_id not in joined.refused_pages]
        plan = _plan(
            recorder.ring,
            now,
            joined.account,
            [user_token, *(write for _, write in allowed)],
            [_link(links[page_id], joined.account, granted_by=user_id) for page_id, _ in allowed],
        )
        rows, _session_exists = _rows(found)
        connected = [_connected(rows, user_token, None, joined.account)]
        connected += [_connected(rows, write, links[page_id], joined.account) for page_id, write in allowed]
        recorder.record(plan, connected, now=now)
        return plan, joined

    wanted = [user_token.key, *links.values(), *tokens.values()]
    return ReadWrite(_reads(wanted, session_account), decide, locks=[user_token.key, *links.values()])


def facebook_preview(*, user_id: str, page_ids: Sequence[str], session_account: str | None) -> ReadWrite:
    """connect_facebook's decision for a grant, writing nothing: asked before the merchant is shown the
    choice of Pages, so a login the rule refuses is refused then, not after the ticking."""
    links = {page_id: keys.page_uuid_key(page_id) for page_id in page_ids}
    tokens = {page_id: keys.page_token_key(page_id) for page_id in page_ids}
    user_key = keys.facebook_user_token_key(user_id)

    def decide(found: list[list[Any]]) -> tuple[Plan, Joined]:
        joined = _facebook_decision(
            found, user_id=user_id, user_key=user_key, links=links, tokens=tokens, session_account=session_account
        )
        return Plan(), joined

    return ReadWrite(_reads([user_key, *links.values(), *tokens.values()], session_account), decide)
