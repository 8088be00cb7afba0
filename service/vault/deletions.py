"""Deleting tokens and links with the events that say so, in one writer transaction (DESIGN.md, "The
event log"): the rows are read first (locked), so each event carries the account, name and token
fingerprint the connection had, and only what was really deleted is recorded. What a provider removed
(`removed`: a reason code of vault/health.py whose state is gone) is also remembered in
connection_removals, for the merchant's page to tell once (vault/verdicts.py, take_removals).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from service import keys
from service.models import utcnow
from service.providers.shopify import SHOP_SUFFIX
from service.vault import events, sql
from service.vault.events import Actor, Event, Recorder, StoredRow, about_rows
from service.vault.planner import Plan, Step
from service.vault.writes import ReadWrite


def _delete(found: Sequence[StoredRow], wanted: Sequence[str]) -> Plan:
    keys_found = [row.key for row in found]
    # Every wanted key is absent afterwards, whether or not a row was there: the cache may say so.
    steps = [Step(sql.DELETE_KEYS, [{"keys": keys_found}], returning=True)] if keys_found else []
    return Plan(steps, set(wanted), dict.fromkeys(wanted))


def delete_keys(
    recorder: Recorder, wanted: Sequence[str], *, kind: str, by: Actor | None, reason: str | None = None
) -> ReadWrite:
    """Delete these rows; one `kind` event per connection that had any. Result: the rows deleted."""

    def decide(found: list[list[Any]]) -> tuple[Plan, int]:
        rows = [StoredRow.of(row) for row in found[0]]
        plan = _delete(rows, wanted)
        return recorder.record(plan, about_rows(kind, rows, recorder.ring, reason=reason), by=by), len(rows)

    return ReadWrite([(sql.EVENT_ROWS, {"keys": list(wanted)})], decide, entries=dict.fromkeys(wanted))


def forget_shop(
    recorder: Recorder,
    shop_key: str,
    *,
    with_link: bool,
    not_after: datetime | None,
    kind: str,
    by: Actor | None,
    erase_history: bool = False,
    reason: str | None = None,
    removed: str | None = None,
) -> ReadWrite:
    """A shop's token (unless written after `not_after`: a reinstall that raced its uninstall) and, with_link,
    its account link. erase_history (shop/redact): its earlier events go too, and the event left says so."""
    token_key, link_key = keys.shopify_token_key(shop_key), keys.shopify_uuid_key(shop_key)
    reason = reason or removed

    def decide(found: list[list[Any]]) -> tuple[Plan, int]:
        rows = {row.key: row for row in map(StoredRow.of, found[0])}
        token = rows.get(token_key)
        doomed = []
        if token is not None and (not_after is None or token.updated_at is None or token.updated_at <= not_after):
            doomed.append(token)
        if with_link and link_key in rows:
            doomed.append(rows[link_key])
        plan = _delete(doomed, [token_key, link_key])
        if removed is not None and token in doomed:
            removal = {"key": token_key, "uuid_key": link_key, "subject": shop_key + SHOP_SUFFIX, "reason": removed}
            plan.steps.insert(0, Step(sql.REMOVED_SHOP, [{**removal, "now": utcnow(), "not_after": not_after}]))
        recorded = about_rows(kind, doomed, recorder.ring, reason=reason, erased=erase_history)
        if erase_history:
            plan.steps.insert(0, events.forget_subjects(keys.SHOPIFY, [shop_key]))
            recorded = recorded or [Event(kind, key=token_key)]  # said even when nothing was left to delete
        return recorder.record(plan, recorded, by=by), len(doomed)

    return ReadWrite([(sql.EVENT_ROWS, {"keys": [token_key, link_key]})], decide)


def forget_facebook_user(
    recorder: Recorder, user_id: str, *, erase_links: bool, kind: str, by: Actor | None, removed: str | None = None
) -> ReadWrite:
    """A Facebook user's token and the Page tokens their grant gave (erase_links: the Pages' links too, and
    every earlier event of the user and those Pages: data deletion). One event per connection."""
    params = {"user_key": keys.facebook_user_token_key(user_id), "user": user_id, "erase_links": erase_links}

    def decide(found: list[list[Any]]) -> tuple[Plan, int]:
        rows = [StoredRow.of(row) for row in found[0]]
        steps = [Step(sql.FORGET_FACEBOOK_USER, [params], returning=True)]
        if removed is not None:
            steps.insert(0, Step(sql.REMOVED_PAGES_OF_USER, [{"user": user_id, "reason": removed, "now": utcnow()}]))
        recorded = about_rows(kind, rows, recorder.ring, reason=removed, erased=erase_links)
        if erase_links:
            subjects = {user_id} | {event.subject for event in recorded if event.subject}
            steps.insert(0, events.forget_subjects(keys.FACEBOOK, sorted(subjects)))
            if not any(event.subject == user_id for event in recorded):
                recorded.append(Event(kind, key=keys.facebook_user_token_key(user_id)))
        plan = Plan(steps, {row.key for row in rows})
        return recorder.record(plan, recorded, by=by), len(rows)

    return ReadWrite([(sql.FACEBOOK_USER_ROWS, params)], decide)


def forget_page(recorder: Recorder, page_id: str, *, kind: str, by: Actor | None, removed: str) -> ReadWrite:
    """A Page's token, which the provider removed (its link stays: the Page is still the account's)."""
    key = keys.page_token_key(page_id)
    removal = {"key": key, "uuid_key": keys.page_uuid_key(page_id), "subject": page_id, "reason": removed}

    def decide(found: list[list[Any]]) -> tuple[Plan, int]:
        rows = [StoredRow.of(row) for row in found[0]]
        plan = _delete(rows, [key])
        if rows:
            plan.steps.insert(0, Step(sql.REMOVED_PAGE, [{**removal, "now": utcnow()}]))
        return recorder.record(plan, about_rows(kind, rows, recorder.ring, reason=removed), by=by), len(rows)

    return ReadWrite([(sql.EVENT_ROWS, {"keys": [key]})], decide, entries={key: None})
