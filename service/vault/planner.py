"""The one write planner: token writes in, the statements that store them out (DESIGN.md, "The vault").

Every write to `tokens` is planned here, whoever makes it: `store_token`, group commit, imports,
account linking, the Shopify refresh. This is also where the seed's rule lives that a token belongs
to the account its `*_UUID_*` entry names: a UUID entry links itself and the token beside it; a token
written without an account takes its entry's (a subquery, so it holds whichever is written first).
Consecutive writes of one shape become one `executemany`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from service import keys
from service.crypto import KeyRing
from service.vault import sql
from service.vault.cache import Entry
from service.vault.schema import TokenWrite

ABSENT = None  # a guard: write only if no row has this key yet


@dataclass(frozen=True)
class Step:
    statement: str
    rows: Sequence[Mapping[str, Any]]
    returning: bool = False  # collect the first column of what each row returns
    dialect: str | None = None  # run on this database only (sql.SQLITE, sql.POSTGRES); None: on both


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  # keys whose cached entry the plan may change
    entries: dict[str, Entry | None] = field(default_factory=dict)  # what the cache may hold once committed
    # Steps run at the end of the transaction, after every unit of its batch: the event log's rows
    # (service/vault/events.py), so that they are the last thing each transaction writes.
    closing: list[Step] = field(default_factory=list)

    def changed(self, returned: Sequence[Sequence[Any]]) -> set[str]:
        """The keys whose cached entry this plan may have changed, once run: those it names, and those
        its returning steps returned (a delete by condition knows its keys only then)."""
        return self.touched.union(*returned) if returned else self.touched


@dataclass(frozen=True)
class _Row:
    shape: tuple[frozenset[str], bool, str | None]
    params: dict[str, Any]
    account: str | None  # an account the row names, to be created first
    link: tuple[str, str] | None  # (token key, UUID entry key): the token beside an entry takes its account


def account_rule(write: TokenWrite, info: keys.KeyInfo | None) -> tuple[bool, str | None, str | None]:
    """(names an account itself?, that account, the UUID entry to take it from otherwise); `info` is
    what keys.describe_key says of the write's key."""
    if "account_uuid" in write.metadata:
        return True, write.metadata["account_uuid"], None
    if info is None:
        return False, None, None
    if info.is_uuid:
        account = keys.as_uuid(write.value)
        return account is not None, account, None
    return False, None, info.uuid_key


def _row(write: TokenWrite, ring: KeyRing, now: datetime, guard: tuple[bool, str | None]) -> _Row:
    params: dict[str, Any] = dict(write.metadata)
    info = keys.describe_key(write.key)
    if info is not None:
        params.setdefault("provider", info.provider)
        params.setdefault("subject", info.subject)
    names_account, account, uuid_key = account_rule(write, info)
    if names_account:
        params["account_uuid"] = account
    if params.get("refresh_token") is not None:
        params["refresh_token"] = ring.encrypt(params["refresh_token"])
    guarded, expected = guard
    kind = None if not guarded else ("absent" if expected is ABSENT else "value")
    shape = (frozenset(params), uuid_key is not None, kind)
    params.update(key=write.key, value=ring.encrypt(write.value), type=write.type, now=now)
    if uuid_key is not None:
        params["uuid_key"] = uuid_key
    if kind == "value":
        params["expected"] = expected
    link = None
    if info is not None and info.is_uuid and account is not None:
        link = (info.token_key, write.key)
    return _Row(shape, params, account, link)


def _entry(write: TokenWrite) -> Entry:
    metadata = write.metadata
    if "expires_at" in metadata and "refresh_token" in metadata:
        return Entry.of(write.value, metadata["expires_at"], metadata["refresh_token"] is not None)
    return Entry(write.value)  # when a refresh is due is not known: get_shopify_token reads it


def plan_writes(
    writes: Sequence[TokenWrite],
    *,
    ring: KeyRing,
    now: datetime,
    guards: Mapping[str, str | None] | None = None,
) -> Plan:
    """Statements that store `writes` in order. With `guards` (key -> the ciphertext the row must still
    hold, or ABSENT), a guarded write happens only while that holds, and its step returns the keys written."""
    plan = Plan()
    run: list[_Row] = []

    def flush() -> None:
        if not run:
            return
        accounts = sorted({row.account for row in run if row.account is not None})
        if accounts:
            plan.steps.append(Step(sql.ENSURE_ACCOUNT, [{"account": account, "now": now} for account in accounts]))
        columns, from_entry, guard = run[0].shape
        statement = sql.upsert(columns - {"uuid_key"}, account_from_entry=from_entry, guard=guard)
        plan.steps.append(Step(statement, [row.params for row in run], returning=guard is not None))
        links = [{"key": key, "entry_key": entry} for row in run if row.link for key, entry in [row.link]]
        if links:
            plan.steps.append(Step(sql.LINK_TOKEN, links))
        run.clear()

    for write in writes:
        guard = (True, guards[write.key]) if guards is not None and write.key in guards else (False, None)
        row = _row(write, ring, now, guard)
        if run and row.shape != run[0].shape:
            flush()
        run.append(row)
        plan.touched.add(write.key)
        if not guard[0]:
            plan.entries[write.key] = _entry(write)
    flush()
    return plan


def closing_plan(plans: Sequence[Plan]) -> Plan:
    """The closing steps of a batch's plans, in order, consecutive steps of one statement merged into one."""
    merged: list[Step] = []
    for plan in plans:
        for step in plan.closing:
            last = merged[-1] if merged else None
            if last is not None and (last.statement, last.returning, last.dialect) == (
                step.statement,
                step.returning,
                step.dialect,
            ):
                merged[-1] = Step(step.statement, [*last.rows, *step.rows], step.returning, step.dialect)
            else:
                merged.append(step)
    return Plan(merged)


@dataclass(frozen=True)
class Swap:
    """New ciphertexts for a row (same plaintext), written only while it still holds the old ones."""

    key: str
    old: str
    new: str
    old_refresh: str | None
    new_refresh: str | None


def plan_swaps(swaps: Sequence[Swap]) -> Plan:
    """Compare-and-swap ciphertexts; the step returns the keys swapped (a row rewritten meanwhile is not)."""
    rows = [
        {"key": s.key, "old": s.old, "new": s.new, "old_refresh": s.old_refresh, "new_refresh": s.new_refresh}
        for s in swaps
    ]
    # The plaintext is unchanged, so cached entries stay right: nothing is touched.
    return Plan([Step(sql.SWAP_CIPHERTEXTS, rows, returning=True)] if rows else [])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # stands for "no date" where SQL compares dates


def plan_health(
    key: str,
    state: str | None,
    reason: str | None,
    until: datetime | None,
    *,
    expected: str | None,
    now: datetime,
    checked: bool,
) -> Plan:
    """Store a verdict (state None: nothing wrong) where it differs from the stored one: the first step
    returns the key then. checked: the provider was asked just now (checked_at). Both only while the row
    holds `expected` (a ciphertext; None: whatever it holds)."""
    params = {
        "key": key,
        "expected": expected,
        "health": state,
        "reason": reason,
        "until": until,
        "health_text": state or "",
        "reason_text": reason or "",
        "epoch": _EPOCH,
        "until_or_epoch": until or _EPOCH,
    }
    # Nothing is touched up front: a verdict that changes nothing must not drop cached entries; one that
    # does returns its key, which settles the cache (Plan.changed).
    steps = [Step(sql.SET_HEALTH, [params], returning=True)]
    if checked:
        steps.append(Step(sql.MARK_CHECKED, [{"key": key, "expected": expected, "now": now}]))
    return Plan(steps)


def plan_checked(rows: Sequence[tuple[str, str]], now: datetime) -> Plan:
    """checked_at = now for rows (key, ciphertext) the provider found unchanged, while they hold that value."""
    params = [{"key": key, "expected": expected, "now": now} for key, expected in rows]
    return Plan([Step(sql.MARK_CHECKED, params)] if params else [])


def plan_refresh_failed(key: str, failures: int, retry_at: datetime) -> Plan:
    return Plan([Step(sql.REFRESH_FAILED, [{"key": key, "failures": failures, "retry_at": retry_at}])])


def plan_note_used(keys_used: Sequence[str], now: datetime) -> Plan:
    return Plan([Step(sql.NOTE_USED, [{"keys": list(keys_used), "now": now}])] if keys_used else [])


def plan_metadata(key: str, fields: Mapping[str, Any], ring: KeyRing) -> Plan:
    """Set metadata columns of an existing row, its value untouched; the step returns the key if found."""
    params = {
        name: ring.encrypt(value) if name == "refresh_token" and value is not None else value
        for name, value in fields.items()
    }
    statement = sql.set_columns(frozenset(params))
    return Plan([Step(statement, [{**params, "key": key}], returning=True)], {key})


def plan_take_lease(key: str, now: datetime, until: datetime) -> Plan:
    return Plan([Step(sql.TAKE_LEASE, [{"key": key, "now": now, "until": until}], returning=True)])


def plan_end_lease(key: str) -> Plan:
    return Plan([Step(sql.END_LEASE, [{"key": key}])])
