"""The health model on its own (service/vault/health.py), what debug_token answers mean
(service/providers/facebook.py), and the refresh cooldown: dates and answers in, a verdict out.

Expected values are written from docs/providers.md and the issue's rules, never taken from the code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.providers import facebook
from service.vault import health
from service.vault.health import Facts
from service.vault.refresh import cooldown

NOW = datetime(2026, 12, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def shop(**fields: object) -> Facts:
    return Facts(health.SHOP, refreshable=True, **fields)  # type: ignore[arg-type]


def test_a_refreshable_store_lives_as_long_as_its_refresh_token() -> None:
    # The access token expired long ago (a quiet shop): that only means the next refresh is due.
    quiet = shop(expires_at=NOW - 30 * DAY, refresh_expires_at=NOW + 60 * DAY)
    assert quiet.assess(NOW) == health.Health("ok")
    ending = shop(expires_at=NOW - DAY, refresh_expires_at=NOW + 10 * DAY)
    assert ending.assess(NOW) == health.Health("expiring_soon", "refresh_token_ending", NOW + 10 * DAY)
    # Exactly 14 days ahead is flagged; 15 is not.
    assert shop(refresh_expires_at=NOW + 14 * DAY).assess(NOW).state == "expiring_soon"
    assert shop(refresh_expires_at=NOW + 15 * DAY).assess(NOW).state == "ok"
    ended = shop(refresh_expires_at=NOW - timedelta(seconds=1))
    assert ended.assess(NOW) == health.Health("needs_reconnect", "refresh_token_expired", NOW - timedelta(seconds=1))


def test_a_stored_verdict_wins_over_dates() -> None:
    refused = shop(stored="needs_reconnect", reason="refresh_refused", refresh_expires_at=NOW + 80 * DAY)
    assert refused.assess(NOW) == health.Health("needs_reconnect", "refresh_refused")
    page = Facts(health.PAGE, stored="needs_reconnect", reason="password_changed")
    assert (page.assess(NOW).state, page.assess(NOW).reason) == ("needs_reconnect", "password_changed")
    # An unknown code in the row (a newer release wrote it) still says needs_reconnect, in general words.
    odd = Facts(health.PAGE, stored="needs_reconnect", reason="something_new")
    assert odd.assess(NOW).reason == "token_invalid"


def test_data_access_ending_then_ended() -> None:
    ends = NOW + 5 * DAY
    soon = Facts(health.PAGE, stored="expiring_soon", reason="data_access_ending", until=ends)
    assert soon.assess(NOW) == health.Health("expiring_soon", "data_access_ending", ends)
    assert soon.assess(ends + timedelta(seconds=1)) == health.Health("needs_reconnect", "data_access_expired", ends)
    assert "open the app on Facebook before then" in (soon.assess(NOW).sentence("Acme Shoes") or "")
    assert "2026-12-25" in (soon.assess(NOW).sentence("Acme Shoes") or "")


def test_tokens_marked_dead_before_revision_0010_still_read_as_dead() -> None:
    # Then, a refused token had its expires_at set to the time it was found dead.
    assert Facts(health.PAGE, expires_at=NOW - DAY).assess(NOW) == health.Health(
        "needs_reconnect", "token_invalid", NOW - DAY
    )
    assert Facts(health.SHOP, expires_at=NOW - DAY).assess(NOW).reason == "token_refused"
    # A grant's user token ending by time is not the bot's concern: its Page tokens outlive it.
    assert Facts(health.GRANT, expires_at=NOW - DAY).assess(NOW).state == "ok"


def test_sentences_say_the_state_in_words() -> None:
    assert health.verdict("password_changed").sentence("Acme Outlet") == (
        "Acme Outlet needs reconnecting: its Facebook password was changed."
    )
    assert health.verdict("uninstalled").sentence("Acme") == (
        "Acme is no longer connected: the app was uninstalled from the store."
    )
    assert health.HEALTHY.sentence("Acme") is None
    assert health.verdict("deauthorized").state == "gone"
    # Every reason has a state and words.
    for code, reason in health.REASONS.items():
        assert reason.state in health.STATES and reason.clause, code


@pytest.mark.parametrize(
    ("subcode", "reason"),
    [
        (458, "app_removed"),
        (459, "account_checkpointed"),
        (460, "password_changed"),
        (463, "token_expired"),
        (464, "user_unconfirmed"),
        (467, "session_invalid"),
        (None, "token_invalid"),
        (999, "token_invalid"),
    ],
)
def test_graph_190_subcodes_become_named_reasons(subcode: int | None, reason: str) -> None:
    assert facebook.token_problem(190, subcode) == reason
    error: dict[str, object] = {"code": 190, "message": "Error validating access token"}
    if subcode is not None:
        error["subcode"] = subcode
    status = facebook.token_status({"is_valid": False, "error": error}, page_id="101")
    assert health.of_token_status(status, NOW) == health.verdict(reason)


def test_other_graph_errors_condemn_no_token() -> None:
    assert facebook.token_problem(102, None) == "login_required"
    for code in (4, 17, 32, 100, 613, 2500, None):
        assert facebook.token_problem(code, None) is None, code


def page_answer(**data: object) -> dict[str, object]:
    """A debug_token `data` for a valid Page token of Page 101, as docs/providers.md shows it."""
    answer: dict[str, object] = {
        "app_id": "424242",
        "type": "PAGE",
        "is_valid": True,
        "expires_at": 0,
        "data_access_expires_at": int((NOW + 60 * DAY).timestamp()),
        "profile_id": "101",
        "scopes": ["pages_show_list", "pages_messaging"],
        "granular_scopes": [
            {"scope": "pages_show_list", "target_ids": ["101", "102"]},
            {"scope": "pages_messaging", "target_ids": ["101", "102"]},
        ],
    }
    return {**answer, **data}


def verdict_of(answer: dict[str, object], page_id: str = "101") -> health.Health:
    return health.of_token_status(facebook.token_status(answer, page_id=page_id), NOW)


def test_debug_token_answers_mapped() -> None:
    assert verdict_of(page_answer()) == health.HEALTHY
    ten_days = NOW + 10 * DAY
    assert verdict_of(page_answer(data_access_expires_at=int(ten_days.timestamp()))) == health.Health(
        "expiring_soon", "data_access_ending", ten_days
    )
    passed = NOW - DAY
    assert verdict_of(page_answer(data_access_expires_at=int(passed.timestamp()))) == health.Health(
        "needs_reconnect", "data_access_expired", passed
    )
    # 0: Facebook states no end.
    assert verdict_of(page_answer(data_access_expires_at=0)) == health.HEALTHY
    # pages_messaging granted for other Pages only, or not at all.
    elsewhere = [{"scope": "pages_messaging", "target_ids": ["102"]}]
    assert verdict_of(page_answer(granular_scopes=elsewhere)) == health.verdict("messaging_not_granted")
    assert verdict_of(page_answer(granular_scopes=[{"scope": "pages_show_list"}])) == health.verdict(
        "messaging_not_granted"
    )
    # A page-scoped permission without target_ids covers every Page.
    assert verdict_of(page_answer(granular_scopes=[{"scope": "pages_messaging"}])) == health.HEALTHY
    # Without granular_scopes, the plain scopes decide; without either, nothing is concluded.
    assert verdict_of(page_answer(granular_scopes=None, scopes=["pages_show_list"])).reason == "messaging_not_granted"
    assert verdict_of(page_answer(granular_scopes=None, scopes=None)) == health.HEALTHY
    # Not valid beats everything else.
    invalid = page_answer(is_valid=False, error={"code": 190, "subcode": 458, "message": "x"})
    assert verdict_of(invalid) == health.verdict("app_removed")


def test_the_refresh_cooldown_starts_at_30_s_and_doubles_up_to_10_min() -> None:
    assert [cooldown(n).total_seconds() for n in range(1, 9)] == [30, 60, 120, 240, 480, 600, 600, 600]
    assert cooldown(10_000).total_seconds() == 600
