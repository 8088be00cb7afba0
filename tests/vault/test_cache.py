"""The cache's tickets: a load or a write fills only what nothing invalidated since it began."""

from __future__ import annotations

from service.vault.cache import MISSING, Entry, TokenCache


def test_a_load_fills_what_it_still_holds_and_nothing_an_invalidation_took_back() -> None:
    cache = TokenCache()
    ticket = cache.reserve(["a", "b"])
    cache.invalidate(["b"])  # a change committed while the load was reading
    cache.fill(ticket, {"a": Entry("old-a"), "b": Entry("old-b")})
    assert cache.get("a") == Entry("old-a")
    assert cache.get("b") is MISSING  # the next read loads again and sees the change


def test_a_later_load_replaces_an_earlier_ones_claim() -> None:
    cache = TokenCache()
    first = cache.reserve(["a"])
    second = cache.reserve(["a"])
    cache.fill(first, {"a": Entry("first")})
    assert cache.get("a") is MISSING
    cache.fill(second, {"a": Entry("second")})
    assert cache.get("a") == Entry("second")


def test_a_committed_write_fills_what_it_knows_and_drops_everything_else_it_touched() -> None:
    cache = TokenCache()
    cache.fill(cache.reserve(["x", "y"]), {"x": Entry("x0"), "y": Entry("y0")})
    ticket = cache.reserve(["x"])  # the write knows x's new entry
    loading = cache.reserve(["z"])  # a load of z that read before the write committed
    cache.settle(ticket, {"x": Entry("x1")}, ["x", "y", "z"])
    assert cache.get("x") == Entry("x1")
    assert cache.get("y") is MISSING  # touched, entry unknown: dropped
    cache.fill(loading, {"z": Entry("z-before-the-write")})
    assert cache.get("z") is MISSING  # the load's claim went with the commit


def test_a_write_whose_key_changed_elsewhere_meanwhile_fills_nothing() -> None:
    cache = TokenCache()
    ticket = cache.reserve(["k"])
    cache.invalidate(["k"])  # another process's change, heard before our commit was settled
    cache.settle(ticket, {"k": Entry("ours")}, ["k"])
    assert cache.get("k") is MISSING


def test_absences_are_cached_and_entries_are_bounded() -> None:
    cache = TokenCache(max_size=2)
    cache.fill(cache.reserve(["gone"]), {"gone": None})
    assert cache.get("gone") is None
    cache.fill(cache.reserve(["a", "b"]), {"a": Entry("a"), "b": Entry("b", 0.0)})
    assert len(cache) == 2
    assert cache.get("gone") is MISSING  # the least recently used went
