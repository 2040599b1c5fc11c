"""Gateway rate limits on `limits`: client addresses (IPv6 /64, trusted X-Forwarded-For),
strict per-account limits for password checks, the storage fallback, the settings, and the
refusal to serve plaintext on a public address (no network beyond 127.0.0.1)."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from prometheus_client import CollectorRegistry, Counter

from avatario.gateway.v1 import gateway_pb2
from services.common.errors import ResourceExhausted
from services.gateway.auth import (
    POLICY,
    ClientAddresses,
    Gate,
    ParentPrincipal,
    account_key,
    client_group,
    forwarded_for,
    peer_ip,
)
from services.gateway.main import PlaintextRefused, build_limits, check_public_transport
from services.gateway.ratelimit import Limit, RateLimits, parse_limits, storage_uri
from services.gateway.settings import GatewaySettings, is_loopback_host

SVC = "/avatario.gateway.v1."
SIGN_IN = SVC + "AuthService/SignIn"
CHANGE_PASSWORD = SVC + "AuthService/ChangePassword"
ERASE = SVC + "PrivacyService/EraseFamily"
GET_ACCOUNT = SVC + "FamilyService/GetAccount"
REFRESH = SVC + "AuthService/RefreshTokens"


def settings(**overrides) -> GatewaySettings:
    values = dict(internal_token="t" * 20, jwt_signing_keys='{"a": "' + "s" * 32 + '"}',
                  jwt_active_kid="a")
    values.update(overrides)
    return GatewaySettings(**values)


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- client addresses ------------------------------------------------------------------


@pytest.mark.parametrize(("peer", "ip"), [
    ("ipv4:1.2.3.4:5678", "1.2.3.4"),
    ("ipv6:[2001:db8::1]:5678", "2001:db8::1"),
    ("ipv6:%5B2001:db8::1%5D:5678", "2001:db8::1"),
    ("ipv6:[::ffff:10.1.2.3]:443", "10.1.2.3"),  # dual-stack socket: the IPv4 client
    ("unix:/tmp/socket", None),
    ("", None),
    (None, None),
    ("ipv4:not-an-address:1", None),
])
def test_peer_strings(peer, ip):
    got = peer_ip(peer)
    assert (str(got) if got else None) == ip


def test_ipv6_clients_are_grouped_by_their_64():
    a = client_group(ipaddress.ip_address("2001:db8:1:2:aaaa::1"))
    b = client_group(ipaddress.ip_address("2001:db8:1:2:ffff:ffff:ffff:ffff"))
    c = client_group(ipaddress.ip_address("2001:db8:1:3::1"))
    assert a == b == "2001:db8:1:2::/64" and c != a
    assert client_group(ipaddress.ip_address("192.0.2.7")) == "192.0.2.7"
    clients = ClientAddresses()
    assert clients.client("ipv6:[2001:db8:1:2::5]:1") == clients.client("ipv6:[2001:db8:1:2::6]:2")
    assert clients.client("ipv4:192.0.2.1:1") != clients.client("ipv4:192.0.2.2:1")
    assert clients.client("unix:/run/x") == "unix"


def xff(*values: str) -> list[tuple[str, str]]:
    return [("x-forwarded-for", v) for v in values]


PROXIES = ClientAddresses.of([ipaddress.ip_network("10.0.0.0/8"),
                              ipaddress.ip_network("fd00::/8")])


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy():
    # No proxy configured: the header is the client's own say, never believed.
    assert ClientAddresses().client("ipv4:198.51.100.9:1", xff("203.0.113.5")) == "198.51.100.9"
    # A proxy configured, but this peer is not it.
    assert PROXIES.client("ipv4:198.51.100.9:1", xff("203.0.113.5")) == "198.51.100.9"
    # From the proxy: the right-most address that is not a trusted proxy.
    assert PROXIES.client("ipv4:10.1.1.1:1", xff("203.0.113.5")) == "203.0.113.5"
    assert PROXIES.client("ipv4:10.1.1.1:1", xff("1.1.1.1, 203.0.113.5, 10.2.2.2")) == \
        "203.0.113.5"  # 1.1.1.1 was written by the client: forgeable, not used
    assert PROXIES.client("ipv4:10.1.1.1:1", xff("1.1.1.1", "203.0.113.5")) == "203.0.113.5"
    assert PROXIES.client("ipv6:[fd00::1]:1", xff("2001:db8:5:6::7")) == "2001:db8:5:6::/64"
    assert PROXIES.client("ipv4:10.1.1.1:1", xff("203.0.113.5:4711")) == "203.0.113.5"
    assert PROXIES.client("ipv4:10.1.1.1:1", xff("[2001:db8::1]:443")) == "2001:db8::/64"
    # Only proxies in the chain: the left-most hop.
    assert PROXIES.client("ipv4:10.1.1.1:1", xff("10.9.9.9, 10.8.8.8")) == "10.9.9.9"


@pytest.mark.parametrize("header", [
    "", "not-an-ip", "203.0.113.5,,", "203.0.113.5, bogus", "unknown", "1.2.3.4" + ",1.2.3.4" * 300,
])
def test_malformed_forwarded_for_falls_back_to_the_peer(header):
    assert forwarded_for(xff(header)) is None
    assert PROXIES.client("ipv4:10.1.1.1:1", xff(header)) == "10.1.1.1"
    assert PROXIES.client("ipv4:10.1.1.1:1", []) == "10.1.1.1"


# -- the gate: strict per-account limits -----------------------------------------------


class Context:
    def __init__(self, peer: str, metadata=()) -> None:
        self._peer = peer
        self._metadata = tuple(metadata)

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self):
        return self._metadata


class FakeAuthenticator:
    async def authenticate(self, token: str):
        return ParentPrincipal(parent_id=token, family_id="fam-" + token)


def gate(password: str = "3/hour", **overrides) -> tuple[Gate, Counter]:
    values = dict(password_rate_limit=password, rate_limit_rps=1000, rate_limit_burst=1000,
                  auth_rate_limit_rps=1000, auth_rate_limit_burst=1000,
                  anonymous_rate_limit_rps=1000, anonymous_rate_limit_burst=1000)
    s = settings(**{**values, **overrides})
    registry = CollectorRegistry()
    limited = Counter("limited", "x", ["kind"], registry=registry)
    return Gate(FakeAuthenticator(), build_limits(s, registry), limited,  # type: ignore[arg-type]
                ClientAddresses.of(s.trusted_proxies)), limited


def bearer(parent: str):
    return (("authorization", f"Bearer {parent}"),)


async def test_sign_in_is_limited_per_account_whatever_the_address():
    g, limited = gate("3/hour")
    for i in range(3):  # three addresses, one account (the email normalized)
        email = ["Parent@Example.org", "parent@example.org ", "PARENT@example.org"][i]
        await g.admit(SIGN_IN, gateway_pb2.SignInRequest(email=email),
                      Context(f"ipv4:198.51.100.{i}:1"))
    with pytest.raises(ResourceExhausted) as info:
        await g.admit(SIGN_IN, gateway_pb2.SignInRequest(email="parent@example.org"),
                      Context("ipv6:[2001:db8::1]:1"))
    assert 3500 < info.value.retry_after_s <= 3600
    assert limited.labels("password")._value.get() == 1
    # Another account is not affected, nor are calls that check no password.
    await g.admit(SIGN_IN, gateway_pb2.SignInRequest(email="other@example.org"),
                  Context("ipv4:198.51.100.1:1"))
    await g.admit(REFRESH, gateway_pb2.RefreshTokensRequest(), Context("ipv4:198.51.100.1:1"))


@pytest.mark.parametrize("method", [CHANGE_PASSWORD, ERASE])
async def test_password_checks_with_a_token_are_limited_per_parent(method):
    g, limited = gate("2/minute")
    for i in range(2):
        await g.admit(method, None, Context(f"ipv4:203.0.113.{i}:1", bearer("p1")))
    with pytest.raises(ResourceExhausted) as info:  # a new address does not help
        await g.admit(method, None, Context("ipv4:192.0.2.200:1", bearer("p1")))
    assert 0 < info.value.retry_after_s <= 60
    # ChangePassword and EraseFamily share the parent's budget; other calls are free.
    other = ERASE if method == CHANGE_PASSWORD else CHANGE_PASSWORD
    with pytest.raises(ResourceExhausted):
        await g.admit(other, None, Context("ipv4:192.0.2.200:1", bearer("p1")))
    for _ in range(5):
        await g.admit(GET_ACCOUNT, None, Context("ipv4:192.0.2.200:1", bearer("p1")))
    await g.admit(method, None, Context("ipv4:192.0.2.200:1", bearer("p2")))
    assert limited.labels("password")._value.get() == 2


async def test_anonymous_limits_key_on_the_forwarded_client_behind_a_trusted_proxy():
    g, _ = gate(anonymous_rate_limit_rps=0.01, anonymous_rate_limit_burst=2,
                trusted_proxies="10.0.0.0/8")
    proxy = "ipv4:10.0.0.2:1"
    for _ in range(2):
        await g.admit(REFRESH, None, Context(proxy, xff("203.0.113.5")))
    with pytest.raises(ResourceExhausted):
        await g.admit(REFRESH, None, Context(proxy, xff("203.0.113.5")))
    # Another client behind the same proxy has its own budget.
    await g.admit(REFRESH, None, Context(proxy, xff("203.0.113.6")))
    # A client forging the header directly is keyed on its own address.
    for _ in range(2):
        await g.admit(REFRESH, None, Context("ipv4:198.51.100.1:1", xff(f"192.0.2.{_}")))
    with pytest.raises(ResourceExhausted):
        await g.admit(REFRESH, None, Context("ipv4:198.51.100.1:1", xff("192.0.2.99")))


def test_every_rpc_taking_a_password_is_under_the_strict_limit():
    for service in gateway_pb2.DESCRIPTOR.services_by_name.values():
        for m in service.methods:
            fields = {f.name for f in m.input_type.fields}
            rule = POLICY[f"/{service.full_name}/{m.name}"]
            if fields & {"password", "current_password"} and m.name != "SignUp":
                assert rule.checks_password, m.full_name


def test_account_keys_do_not_carry_the_email():
    key = account_key("parent@example.org")
    assert "example" not in key and key == account_key("parent@example.org")


# -- storage ---------------------------------------------------------------------------


async def test_a_down_shared_storage_falls_back_to_memory_and_still_limits():
    registry = CollectorRegistry()
    now = [0.0]
    store = RateLimits(f"redis://127.0.0.1:{closed_port()}/0", key_prefix="test",
                       registry=registry, retry_s=5.0, clock=lambda: now[0])
    assert store.shared
    limit = Limit.of("test", parse_limits("2/minute"))
    await store.hit(limit, "k")  # no INTERNAL: counted in memory
    assert store.in_fallback
    assert registry.get_sample_value("avatario_gateway_rate_limit_degraded") == 1
    await store.hit(limit, "k")
    with pytest.raises(ResourceExhausted):  # never unlimited
        await store.hit(limit, "k")
    # Within retry_s the storage is not asked again (one error counted so far).
    assert registry.get_sample_value("avatario_gateway_rate_limit_storage_errors_total") == 1
    now[0] = 10.0
    await store.hit(limit, "other")
    assert registry.get_sample_value("avatario_gateway_rate_limit_storage_errors_total") == 2
    await store.close()


@pytest.mark.parametrize(("url", "uri"), [
    ("", None), ("memory://", None), ("redis://127.0.0.1:6379/0", "async+redis://127.0.0.1:6379/0"),
    ("rediss://:pw@cache:6380/1", "async+rediss://:pw@cache:6380/1"),
    ("async+redis://h:1", "async+redis://h:1"), ("redis+unix:///run/r.sock", "async+redis+unix:///run/r.sock"),
])
def test_storage_urls(url, uri):
    assert storage_uri(url) == uri


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    dict(rate_limit_url="http://cache:6379"), dict(rate_limit_url="redis"),
    dict(password_rate_limit="five a minute"), dict(password_rate_limit="5/fortnight"),
    dict(trusted_proxies="10.0.0.0/33"), dict(trusted_proxies="not-a-net"),
    dict(rate_limit_key_prefix="has space"),
])
def test_bad_limit_settings_are_refused(bad):
    with pytest.raises(ValueError):
        settings(**bad)


def test_limit_settings_defaults_and_parsing():
    s = settings()
    assert s.rate_limit_storage is None and s.trusted_proxies == []
    assert [(i.amount, i.get_expiry()) for i in parse_limits(s.password_rate_limit)] == [
        (5, 60), (20, 3600)]
    s = settings(trusted_proxies="10.0.0.0/8, fd00::/8", rate_limit_url="redis://:pw@r:6379/0")
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.0/8", "fd00::/8"]
    assert "pw" not in repr(s) and s.rate_limit_storage == "redis://:pw@r:6379/0"
    assert [str(n) for n in settings(trusted_proxies='["192.0.2.0/24"]').trusted_proxies] == [
        "192.0.2.0/24"]


# -- no plaintext on public interfaces --------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("[::]", False),
    ("10.0.0.5", False), ("2001:db8::1", False), ("gateway.example.org", False), ("", False),
])
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "api.example.org"])
def test_plaintext_on_a_public_address_is_refused(host):
    s = settings(host=host)
    with pytest.raises(PlaintextRefused) as info:
        check_public_transport(s)
    message = str(info.value)
    for name in ("AVATARIO_GATEWAY_PUBLIC_TLS_CERT_FILE", "AVATARIO_GATEWAY_PUBLIC_TLS_KEY_FILE",
                 "AVATARIO_GATEWAY_ALLOW_PLAINTEXT_PUBLIC"):
        assert name in message


def test_loopback_tls_or_the_explicit_opt_out_may_start(tmp_path, capsys):
    check_public_transport(settings(host="127.0.0.1"))
    check_public_transport(settings(host="0.0.0.0", public_tls_cert_file=tmp_path / "c",
                                    public_tls_key_file=tmp_path / "k"))
    check_public_transport(settings(host="0.0.0.0", allow_plaintext_public=True))
    assert "gateway.plaintext_public" in capsys.readouterr().out
