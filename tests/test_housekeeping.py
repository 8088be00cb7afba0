"""Pruning: expired OAuth states, webhook deliveries past a week, deletion requests past 90 days; run by the
app on a schedule of its own, never by a request."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from sqlalchemy import insert, select

from service import keys
from service.app import create_app
from service.housekeeping import DELETION_RETENTION, DELIVERY_RETENTION, Pruned, prune
from service.models import DeletionRequest, OAuthState, WebhookDelivery, utcnow
from service.oauth_state import STATE_LIFETIME, begin_flow
from service.settings import Settings
from service.vault import TokenStore
from tests.routes.helpers import count_states
from tests.web import running_app

STATES, DELIVERIES, DELETIONS = OAuthState.__table__, WebhookDelivery.__table__, DeletionRequest.__table__


async def start_flow(store: TokenStore, *, at: datetime) -> None:
    await begin_flow(store, provider=keys.FACEBOOK, browser_nonce=f"b{at}", scopes=[], redirect_uri="x", now=at)


async def seed(store: TokenStore, now: datetime) -> None:
    """One row of each kind just past its time and one just inside it."""
    await start_flow(store, at=now - STATE_LIFETIME - timedelta(seconds=1))
    await start_flow(store, at=now - STATE_LIFETIME + timedelta(minutes=1))
    async with store.engine.begin() as connection:
        for name, age in (
            ("old", DELIVERY_RETENTION + timedelta(hours=1)),
            ("new", DELIVERY_RETENTION - timedelta(hours=1)),
        ):
            await connection.execute(
                insert(DELIVERIES).values(webhook_id=name, topic="app/uninstalled", received_at=now - age)
            )
        for code, age in (
            ("old", DELETION_RETENTION + timedelta(days=1)),
            ("new", DELETION_RETENTION - timedelta(days=1)),
        ):
            await connection.execute(
                insert(DELETIONS).values(
                    confirmation_code=code,
                    facebook_user_id="1",
                    status="completed",
                    deleted_rows=0,
                    requested_at=now - age,
                )
            )


async def remaining(store: TokenStore) -> tuple[int, list[str], list[str]]:
    async with store.engine.connect() as connection:
        deliveries = (await connection.execute(select(DELIVERIES.c.webhook_id))).scalars().all()
        deletions = (await connection.execute(select(DELETIONS.c.confirmation_code))).scalars().all()
    return await count_states(store), sorted(deliveries), sorted(deletions)


async def test_prune_deletes_what_is_past_its_time_and_nothing_else(store: TokenStore) -> None:
    now = utcnow()
    await seed(store, now)
    assert await remaining(store) == (2, ["new", "old"], ["new", "old"])
    assert await prune(store, now=now) == Pruned(states=1, deliveries=1, deletions=1)
    assert await remaining(store) == (1, ["new"], ["new"])
    assert await prune(store, now=now) == Pruned(states=0, deliveries=0, deletions=0)


async def test_a_login_does_not_sweep_but_the_app_prunes_on_its_own_schedule(migrated: Settings) -> None:
    async with running_app(migrated.database_url) as web:  # the default schedule: not within this test
        await seed(web.store, utcnow())
        assert (await web.browser.get("/facebook/login", follow_redirects=False)).status_code == 302
        assert await remaining(web.store) == (3, ["new", "old"], ["new", "old"])  # a request deletes nothing
    app = create_app(web.settings, prune_every=0.05)
    async with app.router.lifespan_context(app):
        store = app.state.services.store
        deadline = time.monotonic() + 30
        while await remaining(store) != (2, ["new"], ["new"]):
            assert time.monotonic() < deadline, await remaining(store)
            await asyncio.sleep(0.02)  # polling the condition, with a deadline
