"""The gateway's TTL caches (services/gateway/cache.py on cachetools, and DeviceCache on it):
expiry at the TTL, the entry bound, eviction by key or by value, TTL 0 disables."""

from __future__ import annotations

from services.gateway.auth import ChildDevicePrincipal, DeviceCache
from services.gateway.cache import TtlCache


def fake_clock(start: float = 100.0):
    now = [start]
    return now, lambda: now[0]


def test_entries_expire_exactly_at_the_ttl():
    now, clock = fake_clock()
    cache = TtlCache(10.0, clock=clock)
    cache.put(("f1", "c1"), "summary")
    now[0] += 9.999
    assert cache.get(("f1", "c1")) == "summary"
    now[0] += 0.001
    assert cache.get(("f1", "c1")) is None
    assert len(cache) == 0


def test_the_bound_drops_the_least_recently_used_entry():
    _, clock = fake_clock()
    cache = TtlCache(60.0, max_entries=2, clock=clock)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("a", 10)  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (10, None, 3)
    assert len(cache) == 2


def test_evict_by_key_and_by_value():
    _, clock = fake_clock()
    cache = TtlCache(60.0, clock=clock)
    for key in [("f1", "c1"), ("f1", "c2"), ("f2", "c3")]:
        cache.put(key, key[1].upper())
    cache.evict(lambda k: k[0] == "f1" and k[1] == "c1")
    assert cache.get(("f1", "c1")) is None and cache.get(("f1", "c2")) == "C2"
    cache.evict_where(lambda _k, v: v == "C3")
    assert cache.get(("f2", "c3")) is None and len(cache) == 1


def test_a_ttl_of_zero_or_less_caches_nothing():
    for ttl in (0.0, -1.0):
        cache = TtlCache(ttl)
        cache.put("k", "v")
        assert cache.get("k") is None and len(cache) == 0


def test_device_cache_keeps_a_hash_of_the_token_and_is_bounded():
    now, clock = fake_clock()
    cache = DeviceCache(30.0, max_entries=2, clock=clock)
    who = [ChildDevicePrincipal(f"d{i}", f"c{i}", "f1") for i in range(3)]
    for i, w in enumerate(who):
        cache.put(f"tok-{i}", w)
    assert cache.get("tok-0") is None  # bounded: the oldest went
    assert cache.get("tok-1") == who[1] and cache.get("tok-2") == who[2]
    assert "tok-1" not in repr(cache._cache._items)  # only the token's hash is kept
    cache.evict(device_id="d1")
    assert cache.get("tok-1") is None and cache.get("tok-2") == who[2]
    now[0] += 30.0
    assert cache.get("tok-2") is None
