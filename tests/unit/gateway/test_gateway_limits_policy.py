"""Rate limits, stream cap, the policy table and the bearer parser (no network)."""

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
from services.gateway.ratelimit import Limit, RateLimits, StreamLimiter, token_bucket_window


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_a_limit_allows_its_burst_then_refuses_with_the_window_delay():
    store = RateLimits()
    limit = Limit.of("test", [token_bucket_window(rate_per_s=0.2, burst=3)])  # 3 per 15 s
    for _ in range(3):
        await store.hit(limit, "a")
    with pytest.raises(ResourceExhausted) as info:
        await store.hit(limit, "a")
    assert 14.0 < info.value.retry_after_s <= 15.0
    await store.hit(limit, "b")  # keys are independent
    assert not store.shared


def test_token_bucket_settings_map_to_a_window_with_the_same_rate_and_burst():
    item = token_bucket_window(20.0, 40)
    assert (item.amount, item.get_expiry()) == (40, 2)
    assert token_bucket_window(1000, 10).get_expiry() == 1  # at least one second


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
    strict = {k.rsplit(".", 1)[1]
              for k, r in POLICY.items() if r.checks_password}
    assert strict == {"AuthService/SignIn", "AuthService/ChangePassword",
                      "PrivacyService/EraseFamily", "PrivacyService/DeleteChild",
                      "FamilyService/TransferOwnership"}
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
