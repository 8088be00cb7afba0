"""Connection health: one verdict per connection, decided here and nowhere else (DESIGN.md, "Connection health").

Every connection (a store, a Page, a Facebook user's grant) is in one of four states:

- `ok`: the bot can use it;
- `expiring_soon`: it works, and stops on a known date unless the merchant acts (`until`);
- `needs_reconnect`: the provider no longer accepts it; a reason code says why, a sentence says it;
- `gone`: the provider removed it (uninstalled, deauthorized, data deleted), or the merchant disconnected.

What is stored (revision 0010) is the provider's last verdict on the token (`health`, `health_reason`,
`health_until`); what is computed here besides is what the dates alone say (a refresh token near its
end, data access whose date has passed). So the connections page, its JSON, PageConnection and
ShopConnection, `tokens list` and `tokens check` all call `Facts.assess` and agree. The vault writes
verdicts in one place (`store.verdicts.record`, vault/verdicts.py); a new token value clears them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from service import keys
from service.providers.facebook import TokenStatus

if TYPE_CHECKING:
    from service.vault.schema import TokenRecord

OK, EXPIRING_SOON, NEEDS_RECONNECT, GONE = "ok", "expiring_soon", "needs_reconnect", "gone"
STATES = (OK, EXPIRING_SOON, NEEDS_RECONNECT, GONE)
# How far ahead an end the merchant can prevent is flagged (a refresh token, Facebook's data access).
WARN_AHEAD = timedelta(days=14)
# Kinds of connection, by the key of their token.
SHOP, PAGE, GRANT = "shop", "page", "grant"


@dataclass(frozen=True)
class Reason:
    code: str
    state: str  # the state this reason puts a connection in
    clause: str  # finishes "Acme Outlet needs reconnecting: ..." ({when}: the date, where there is one)


REASONS = {
    reason.code: reason
    for reason in (
        # Shopify
        Reason(
            "refresh_refused",
            NEEDS_RECONNECT,
            "Shopify no longer accepts its refresh token (the app was uninstalled, or its access withdrawn)",
        ),
        Reason("token_refused", NEEDS_RECONNECT, "Shopify no longer accepts its access token"),
        Reason(
            "refresh_token_expired",
            NEEDS_RECONNECT,
            "its refresh token ended on {when}, so Shopify gives no new access token",
        ),
        Reason(
            "refresh_token_ending",
            EXPIRING_SOON,
            "renewing its access keeps failing and its refresh token ends on {when}; reconnect the store before then",
        ),
        # Facebook: Graph error 190's subcodes (providers/facebook.py maps them), debug_token's answers
        Reason("app_removed", NEEDS_RECONNECT, "the app was removed from its Facebook account"),
        Reason("account_checkpointed", NEEDS_RECONNECT, "Facebook has locked its account until its owner logs in"),
        Reason("password_changed", NEEDS_RECONNECT, "its Facebook password was changed"),
        Reason("token_expired", NEEDS_RECONNECT, "its Facebook token has expired"),
        Reason("user_unconfirmed", NEEDS_RECONNECT, "its Facebook account is not confirmed"),
        Reason("session_invalid", NEEDS_RECONNECT, "its Facebook session has ended (a log-out, or another reason)"),
        Reason("login_required", NEEDS_RECONNECT, "Facebook asks its owner to log in again"),
        Reason("token_invalid", NEEDS_RECONNECT, "Facebook no longer accepts its token"),
        Reason(
            "messaging_not_granted",
            NEEDS_RECONNECT,
            "the permission to answer its messages (pages_messaging) is not granted for it",
        ),
        Reason("data_access_expired", NEEDS_RECONNECT, "Facebook's data access for it ended on {when}"),
        Reason(
            "data_access_ending",
            EXPIRING_SOON,
            "Facebook's data access for it ends on {when}; open the app on Facebook before then",
        ),
        # Removed by the provider (the token is deleted; service/revocations.py)
        Reason("uninstalled", GONE, "the app was uninstalled from the store"),
        Reason("shop_redacted", GONE, "Shopify asked for the store's data to be erased"),
        Reason("deauthorized", GONE, "the app was removed on Facebook"),
        Reason("page_removed", GONE, "the Page removed the app on Facebook"),
        Reason("data_deleted", GONE, "its data was deleted at its owner's request on Facebook"),
    )
}


@dataclass(frozen=True, slots=True)
class Health:
    state: str = OK
    reason: str | None = None  # a code of REASONS; None when ok
    until: datetime | None = None  # expiring_soon: act before then; a date that passed: when it ended

    @property
    def clause(self) -> str | None:
        """What is wrong, as the end of a sentence ("its Facebook password was changed"); None when ok."""
        if self.reason is None:
            return None
        when = f"{self.until:%Y-%m-%d}" if self.until is not None else "a date Facebook did not give"
        return REASONS[self.reason].clause.format(when=when)

    @property
    def needs_merchant(self) -> bool:
        """The merchant must act: reconnect now, or before `until`."""
        return self.state in (NEEDS_RECONNECT, EXPIRING_SOON)

    def sentence(self, name: str) -> str | None:
        """The state in words, about a connection called `name`; None when ok."""
        if self.state == NEEDS_RECONNECT:
            return f"{name} needs reconnecting: {self.clause}."
        if self.state == EXPIRING_SOON:
            return f"{name}: {self.clause}."
        if self.state == GONE:
            return f"{name} is no longer connected: {self.clause}."
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "health": self.state,
            "reason": self.reason,
            "until": None if self.until is None else self.until.isoformat(timespec="seconds"),
        }


HEALTHY = Health()


def verdict(reason: str, until: datetime | None = None) -> Health:
    """A provider's verdict, by its reason code (its state is the reason's)."""
    return Health(REASONS[reason].state, reason, until)


def kind_of(key: str) -> str | None:
    if key.startswith(keys.SHOPIFY_TOKEN_PREFIX):
        return SHOP
    if key.startswith(keys.PAGE_TOKEN_PREFIX):
        return PAGE
    if key.startswith(keys.FACEBOOK_USER_TOKEN_PREFIX) or key == keys.SEED_FACEBOOK_USER_TOKEN:
        return GRANT
    return None


@dataclass(frozen=True, slots=True)
class Facts:
    """What a connection's row says about its health: the stored verdict and the dates that matter."""

    kind: str | None  # SHOP, PAGE, GRANT (kind_of)
    stored: str | None = None  # the stored verdict's state, None when nothing is wrong
    reason: str | None = None
    until: datetime | None = None
    expires_at: datetime | None = None
    refreshable: bool = False
    refresh_expires_at: datetime | None = None

    @classmethod
    def of_record(cls, record: TokenRecord) -> Facts:
        return cls(
            kind_of(record.key),
            record.health,
            record.health_reason,
            record.health_until,
            record.expires_at,
            record.refreshable,
            record.refresh_expires_at,
        )

    def assess(self, now: datetime) -> Health:
        """The health of the connection at `now`. The one place that decides it."""
        if self.stored == NEEDS_RECONNECT:
            return Health(NEEDS_RECONNECT, self.reason if self.reason in REASONS else _refused(self.kind), self.until)
        if self.refreshable:
            # A refreshable Shopify token lives as long as its refresh token: the access token's own
            # expiry only says when the next refresh is due.
            end = self.refresh_expires_at
            if end is not None and end <= now:
                return Health(NEEDS_RECONNECT, "refresh_token_expired", end)
            if end is not None and end - now <= WARN_AHEAD:
                return Health(EXPIRING_SOON, "refresh_token_ending", end)
        elif self.kind != GRANT and self.expires_at is not None and self.expires_at <= now:
            # Nothing can renew it: ended by time, or marked dead before revision 0010 (expires_at set
            # when a provider refused it). A grant's user token is not what the bot uses: the Page tokens
            # taken from it outlive it.
            return Health(NEEDS_RECONNECT, _refused(self.kind), self.expires_at)
        if self.stored == EXPIRING_SOON and self.reason in REASONS:
            if self.until is not None and self.until <= now:
                return Health(NEEDS_RECONNECT, "data_access_expired", self.until)
            return Health(EXPIRING_SOON, self.reason, self.until)
        return HEALTHY


def _refused(kind: str | None) -> str:
    return "token_refused" if kind == SHOP else "token_invalid"


def of_record(record: TokenRecord, now: datetime) -> Health:
    return Facts.of_record(record).assess(now)


def of_token_status(status: TokenStatus, now: datetime) -> Health:
    """What Graph's debug_token said about a token, as a verdict (docs/providers.md)."""
    if not status.valid:
        return verdict(status.problem or "token_invalid")
    if status.messaging_granted is False:
        return verdict("messaging_not_granted")
    ends = status.data_access_expires_at
    if ends is not None and ends <= now:
        return verdict("data_access_expired", ends)
    if ends is not None and ends - now <= WARN_AHEAD:
        return verdict("data_access_ending", ends)
    return HEALTHY
