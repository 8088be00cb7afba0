"""Pruning the tables that requests anyone can send make grow: OAuth states, Facebook grants waiting
for a choice of Pages and browser sessions past expiry, webhook deliveries past the de-duplication
window, deletion requests and the providers' removals past their retention; and connection events past
EVENTS_RETENTION_DAYS (with the webhook outbox emptied when no EVENTS_WEBHOOK_URL is set). It runs on a
schedule in the app's lifespan, never per request (DESIGN.md, "OAuth" and "The event log").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.engine import Connection

from service import pending_grants, sessions
from service.leadership import run_periodically
from service.models import DeletionRequest, OAuthState, WebhookDelivery, utcnow
from service.vault import TokenStore

logger = logging.getLogger("salesbot.housekeeping")
STATES = OAuthState.__table__
DELIVERIES = WebhookDelivery.__table__
DELETIONS = DeletionRequest.__table__

PRUNE_EVERY = 600.0  # seconds between runs
# Shopify retries a delivery for up to 48 hours, and a signed_request is good for one: a week covers both.
DELIVERY_RETENTION = timedelta(days=7)
# How long a data-deletion status URL keeps answering.
DELETION_RETENTION = timedelta(days=90)
# What the providers removed, told to the merchant once; kept this long when nobody looks.
REMOVAL_RETENTION = timedelta(days=90)


@dataclass(frozen=True)
class Pruned:
    states: int
    deliveries: int
    deletions: int
    grants: int = 0  # Facebook grants nobody chose Pages for in time
    removals: int = 0  # stores and Pages the providers removed, kept past REMOVAL_RETENTION
    events: int = 0  # connection events older than EVENTS_RETENTION_DAYS
    sessions: int = 0  # browser sessions past their expiry


async def prune(store: TokenStore, *, now: datetime | None = None) -> Pruned:
    """Delete what is past its time (the service's tables in one write transaction, events in another);
    return how many rows of each."""
    now = now or utcnow()

    def job(connection: Connection) -> Pruned:
        return Pruned(
            states=connection.execute(delete(STATES).where(STATES.c.expires_at <= now)).rowcount,
            deliveries=connection.execute(
                delete(DELIVERIES).where(DELIVERIES.c.received_at < now - DELIVERY_RETENTION)
            ).rowcount,
            deletions=connection.execute(
                delete(DELETIONS).where(DELETIONS.c.requested_at < now - DELETION_RETENTION)
            ).rowcount,
            grants=connection.execute(pending_grants.prune_statement(now)).rowcount,
            sessions=connection.execute(sessions.prune_statement(now)).rowcount,
        )

    pruned = await store.run_write(job)
    if store.settings.events_webhook_url is None:
        await store.event_log.clear_outbox()  # nobody to send them to: a receiver set later starts from then
    removals = await store.verdicts.prune_removals(now - REMOVAL_RETENTION)  # the vault's own table
    retention = timedelta(days=store.settings.events_retention_days)
    return replace(pruned, removals=removals, events=await store.event_log.prune(retention, now=now))


async def prune_and_log(store: TokenStore) -> Pruned:
    pruned = await prune(store)
    counts = (pruned.states, pruned.deliveries, pruned.deletions, pruned.grants, pruned.sessions, pruned.removals)
    if any((*counts, pruned.events)):
        logger.info(
            "pruned %d expired states, %d expired Facebook grants, %d expired sessions, %d old webhook deliveries, "
            "%d old deletion requests, %d old removals, %d old connection events",
            pruned.states,
            pruned.grants,
            pruned.sessions,
            pruned.deliveries,
            pruned.deletions,
            pruned.removals,
            pruned.events,
        )
    return pruned


async def prune_periodically(store: TokenStore, every: float = PRUNE_EVERY) -> None:
    """Prune every `every` seconds until cancelled, in one process at a time across every instance and
    worker (service/leadership.py); a failed run is logged (its class only) and retried."""
    await run_periodically(store.settings.database_url, "housekeeping", lambda: prune_and_log(store), every)
