"""`salesbot events`: the connection event log for the operator, and the webhook's failed deliveries
(README, "Events"). Lines go to stdout (JSON with --json), counts to stderr; names are printed with
control characters escaped, as providers chose them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from service import events
from service.command_line import EXIT_USAGE, CommandFailed, add_command
from service.printable import printable

if TYPE_CHECKING:
    from service.vault import Delivery, LoggedEvent, TokenStore

DEFAULT_LIMIT = 100
_RELATIVE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class Refused(Exception):
    """A usage error of these commands: one line, exit 2."""


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or time (UTC unless it says otherwise), or an age: 30m, 2h, 7d."""
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Refused(f"--since {text!r} is neither a time (2026-12-07T14:00) nor an age (30m, 2h, 7d).") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def line(event: LoggedEvent) -> str:
    when = event.at.strftime("%Y-%m-%d %H:%M:%SZ")
    who = " ".join(part for part in (event.actor, event.os_user, event.instance and f"@{event.instance}") if part)
    parts = [when, f"{event.kind:<13}", f"{event.provider or '-'}:{event.subject or event.key or '-'}"]
    if event.name:
        parts.append(json.dumps(event.name, ensure_ascii=False))
    parts.append(f"account={event.account or '-'}")
    parts.append(f"by {who}")
    if event.reason:
        parts.append(f"reason={event.reason}")
    if event.fingerprint:
        parts.append(f"token={event.fingerprint}")
    if event.detail:
        parts.append(json.dumps(event.detail, sort_keys=True))
    parts.append(f"id={event.id}")
    return printable("  ".join(parts))


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    from service import keys
    from service.errors import InvalidShop
    from service.providers.shopify import normalize_shop
    from service.vault.events import subject_of

    found: dict[str, Any] = {"kind": args.kind}
    if args.kind is not None and args.kind not in events.KINDS:
        raise Refused(f"--kind {args.kind!r} is not an event kind: {', '.join(events.KINDS)}.")
    if args.account is not None:
        try:
            found["account"] = str(uuid.UUID(args.account))
        except ValueError:
            raise Refused("--account takes an account UUID.") from None
    if args.shop is not None:
        try:
            found.update(provider=keys.SHOPIFY, subject=subject_of(keys.SHOPIFY, normalize_shop(args.shop)))
        except InvalidShop as error:
            raise Refused(f"--shop: {error.message}") from None
    if args.page is not None:
        if not args.page.isascii() or not args.page.isdigit():
            raise Refused("--page takes a Page id (digits).")
        found.update(provider=keys.FACEBOOK, subject=args.page)
    return found


async def _list(store: TokenStore, args: argparse.Namespace) -> None:
    from service.vault import Filters

    chosen = _filters(args)
    since = parse_when(args.since) if args.since else None
    filters = Filters(**chosen, since=since)
    listed = list(reversed(await store.event_log.list(filters, limit=args.limit, newest_first=True)))
    for event in listed:
        _show(event, args.json)
    print(f"{len(listed)} event(s){'; following' if args.follow else ''}.", file=sys.stderr)
    if not args.follow:
        return
    after = listed[-1].seq if listed else await store.event_log.newest_seq()
    async for event in store.events(after, **chosen):
        if since is None or event.at >= since:
            _show(event, args.json)


def _show(event: LoggedEvent, as_json: bool) -> None:
    print(json.dumps(event.as_dict()) if as_json else line(event), flush=True)


def _delivery_line(delivery: Delivery) -> str:
    last = delivery.last_attempt_at.strftime("%Y-%m-%d %H:%M:%SZ") if delivery.last_attempt_at else "-"
    return printable(
        f"{delivery.event.id}  {delivery.event.kind:<13}  {delivery.subject_key}  attempts={delivery.attempts}  "
        f"last={last}  error={delivery.last_error or '-'}"
    )


async def _failed(store: TokenStore, args: argparse.Namespace) -> None:
    failed = await store.event_log.failed()
    for delivery in failed:
        if args.json:
            print(json.dumps({**delivery.event.as_dict(), "attempts": delivery.attempts, "error": delivery.last_error}))
        else:
            print(_delivery_line(delivery))
    print(f"{len(failed)} failed deliver{'y' if len(failed) == 1 else 'ies'}.", file=sys.stderr)


async def _redeliver(store: TokenStore, args: argparse.Namespace) -> int:
    from service.models import utcnow

    if store.settings.events_webhook_url is None:
        raise Refused("EVENTS_WEBHOOK_URL is not set, so there is nowhere to deliver to; nothing was queued.")
    if bool(args.ids) == args.all_failed:
        raise Refused("give event ids, or --all-failed (not both).")
    for event_id in args.ids:
        try:
            uuid.UUID(event_id)
        except ValueError:
            raise Refused(f"{printable(event_id)!r} is not an event id (a UUID, as `salesbot events` shows).") from None
    queued = await store.event_log.redeliver(args.ids, all_failed=args.all_failed, now=utcnow())
    missing = [event_id for event_id in args.ids if event_id not in queued]
    for event_id in queued:
        print(f"queued  {event_id}")
    for event_id in missing:
        print(f"not found or already queued  {printable(event_id)}")
    print(f"{len(queued)} event(s) queued for delivery; `serve` sends them.", file=sys.stderr)
    return 1 if missing else 0


def handler(args: argparse.Namespace) -> int:
    from service.settings import Settings
    from service.vault import TokenStore

    async def run() -> int:
        async with TokenStore.open(Settings.load(args.env_file), actor=events.CLI) as store:
            if getattr(args, "events_command", None) == "redeliver":
                return await _redeliver(store, args)
            if args.failed:
                await _failed(store, args)
            else:
                await _list(store, args)
            return 0

    try:
        return asyncio.run(run())
    except Refused as refusal:
        raise CommandFailed(str(refusal), EXIT_USAGE) from None


def add_commands(commands: Any) -> None:
    """`salesbot events` and `salesbot events redeliver` on the `salesbot` sub-parser group."""
    listing = add_command(
        commands, "events", "the connection event log (newest last); --failed: webhook deliveries given up", handler
    )
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--account", metavar="UUID", help="one account's events")
    which.add_argument("--shop", metavar="DOMAIN", help="one store's events")
    which.add_argument("--page", metavar="ID", help="one Facebook Page's events")
    listing.add_argument("--kind", metavar="K", help=f"only this kind ({', '.join(events.KINDS)})")
    listing.add_argument("--since", metavar="WHEN", help="from this time (2026-12-07T14:00, UTC) or age (30m, 2h, 7d)")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="the newest N events")
    listing.add_argument("--json", action="store_true", help="one JSON object per line, as the webhook sends them")
    listing.add_argument("--follow", action="store_true", help="then print each new event as it is committed")
    listing.add_argument("--failed", action="store_true", help="list webhook deliveries marked failed instead")
    actions = listing.add_subparsers(dest="events_command", metavar="ACTION")
    redeliver = add_command(actions, "redeliver", "send events to EVENTS_WEBHOOK_URL again", handler)
    redeliver.add_argument("ids", nargs="*", metavar="ID", help="event ids (from `salesbot events`)")
    redeliver.add_argument("--all-failed", action="store_true", help="every delivery marked failed")
