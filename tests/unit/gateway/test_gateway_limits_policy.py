"""Rate limiter, stream cap, the policy table and the bearer parser (no network)."""

from __future__ import annotations

import pytest

from avatario.gateway.v1 import gateway_pb2
from services.common.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from services.gateway.auth import (
    ANON,
    DEVICE,
    PARENT,
    POLICY,
    Anonymous,
    ChildDevicePrincipal,
    DeviceCache,
    ParentPrincipal,
    bearer_token,
    own_child,
)
from services.gateway.ratelimit import RateLimiter, StreamLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_bucket_allows_the_burst_then_refills_at_the_rate():
    clock = Clock()
    rl = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [rl.try_acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = rl.try_acquire("a")
    assert wait == pytest.approx(0.5)
    assert rl.try_acquire("b") == 0.0  # keys are independent
    clock.t += 0.5
    assert rl.try_acquire("a") == 0.0
    clock.t += 100
    assert [rl.try_acquire("a") for _ in range(4)].count(0.0) == 3  # capped at the burst


def test_acquire_raises_resource_exhausted_with_retry_after():
    clock = Clock()
    rl = RateLimiter(rate=0.2, burst=1, clock=clock)
    rl.acquire("k")
    with pytest.raises(ResourceExhausted) as info:
        rl.acquire("k")
    assert info.value.retry_after_s == pytest.approx(5.0)


def test_bucket_memory_is_bounded():
    rl = RateLimiter(rate=1, burst=1, max_keys=100)
    for i in range(1000):
        rl.try_acquire(f"k{i}")
    assert len(rl) == 100


def test_stream_limiter_caps_per_key_and_frees_slots():
    sl = StreamLimiter(2)
    with sl.slot("p"), sl.slot("p"):
        with pytest.raises(ResourceExhausted), sl.slot("p"):
            pass
        with sl.slot("q"):
            assert sl.active() == 3
    assert sl.active() == 0 and sl.active("p") == 0
    with pytest.raises(RuntimeError), sl.slot("p"):
        raise RuntimeError("stream failed")
    assert sl.active("p") == 0


def test_every_public_rpc_has_exactly_one_policy_row():
    public = {f"/{s.full_name}/{m.name}"
              for s in gateway_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods}
    assert set(POLICY) == public


def test_the_policy_table():
    def who(method: str) -> set[str]:
        return set(POLICY[f"/avatario.gateway.v1.{method}"].allowed)

    anonymous = {k for k, r in POLICY.items() if ANON in r.allowed}
    assert {k.rsplit("/", 1)[1] for k in anonymous} == {
        "SignUp", "SignIn", "RefreshTokens", "PairDevice"}
    device = {k.rsplit("/", 1)[1] for k, r in POLICY.items() if DEVICE in r.allowed}
    assert device == {"ListGames", "SubmitGameSession", "SubmitMoodCheckIn", "GetAvatar",
                      "CustomizeAvatar", "ListAvatarItems"}
    for method in ("ReportService/GetChildReport", "ReportService/ListFlags", "ChatService/Chat",
                   "FamilyService/GetChild", "PrivacyService/EraseFamily"):
        assert who(method) == {PARENT}
    assert POLICY["/avatario.gateway.v1.AuthService/SignIn"].limit == "credentials"
    assert all(r.allowed for r in POLICY.values())
    # Nothing is open to both anonymous callers and credentials.
    assert all(r.allowed == {ANON} or ANON not in r.allowed for r in POLICY.values())


def test_a_device_acts_only_for_its_own_child():
    dev = ChildDevicePrincipal("d", "child-1", "fam")
    assert own_child(dev, "") == "child-1"
    assert own_child(dev, "child-1") == "child-1"
    with pytest.raises(PermissionDenied):
        own_child(dev, "child-2")
    parent = ParentPrincipal("p", "fam")
    assert own_child(parent, "child-2") == "child-2"
    assert Anonymous("peer").kind == "anonymous"


@pytest.mark.parametrize("value", [
    None, "", "Bearer", "Bearer ", "Basic abc", "Token abc", "Bearer a b", "bearer", "x" * 5000,
])
def test_malformed_authorization_is_unauthenticated(value):
    metadata = [] if value is None else [("authorization", value)]
    with pytest.raises(Unauthenticated):
        bearer_token(metadata)


def test_bearer_parsing():
    assert bearer_token([("authorization", "Bearer abc.def")]) == "abc.def"
    assert bearer_token([("authorization", "bearer  abc ")]) == "abc"
    with pytest.raises(Unauthenticated):
        bearer_token([("authorization", "Bearer a"), ("authorization", "Bearer b")])


def test_device_cache_expires_and_evicts():
    clock = Clock()
    cache = DeviceCache(5.0, max_entries=2, clock=clock)
    a, b = ChildDevicePrincipal("d1", "c1", "f1"), ChildDevicePrincipal("d2", "c2", "f2")
    cache.put("tok-a", a)
    cache.put("tok-b", b)
    assert cache.get("tok-a") == a
    clock.t += 5.1
    assert cache.get("tok-a") is None
    cache.put("tok-a", a)
    cache.evict(device_id="d1")
    assert cache.get("tok-a") is None and cache.get("tok-b") is None  # b expired too
    cache.put("tok-b", b)
    cache.evict(family_id="f2")
    assert cache.get("tok-b") is None
    DeviceCache(0.0).put("x", a)  # TTL 0 disables caching
