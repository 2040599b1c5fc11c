"""Rendezvous hashing (stable, balanced, minimal movement) and the parsing and
resolution of the inference targets."""

from __future__ import annotations

import socket
import uuid
from collections import Counter

import pytest

from services.gateway.clients.discovery import Endpoint, Resolver, Target, parse_targets
from services.gateway.clients.rendezvous import rank, weight

KEYS = [str(uuid.UUID(int=i * 7919 + 13)) for i in range(6000)]
THREE = ["10.0.0.1:50054", "10.0.0.2:50054", "10.0.0.3:50054"]


def owners(members):
    return {k: rank(k, members)[0] for k in KEYS}


def test_the_order_is_the_same_whatever_the_member_order_and_on_every_call():
    for key in KEYS[:200]:
        first = rank(key, THREE)
        assert rank(key, list(reversed(THREE))) == first
        assert rank(key, THREE + THREE[:1]) == first  # duplicates do not count twice
        assert sorted(first) == sorted(THREE)


def test_weights_are_fixed_values_not_per_process_hashes():
    # blake2b, not Python's salted hash(): every gateway replica ranks alike.
    assert weight("conversation", "10.0.0.1:50054") == weight("conversation", "10.0.0.1:50054")
    assert weight("a", "m") == int.from_bytes(
        __import__("hashlib").blake2b(b"m\x00a", digest_size=8).digest(), "big")


def test_keys_spread_evenly():
    share = Counter(owners(THREE).values())
    for member in THREE:
        assert abs(share[member] - len(KEYS) / 3) < 0.06 * len(KEYS), share


def test_a_member_joining_takes_only_its_own_share():
    before = owners(THREE)
    new = "10.0.0.4:50054"
    after = owners(THREE + [new])
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == new for k in moved)  # nothing moves between the old members
    assert abs(len(moved) - len(KEYS) / 4) < 0.06 * len(KEYS)


def test_a_member_leaving_gives_away_only_its_keys_spread_over_the_rest():
    before = owners(THREE)
    gone = THREE[1]
    after = owners([m for m in THREE if m != gone])
    moved = [k for k in KEYS if before[k] != after[k]]
    assert sorted(moved) == sorted(k for k in KEYS if before[k] == gone)
    # each goes to the next member of its own order, so both others get some
    assert all(after[k] == rank(k, THREE)[1] for k in moved)
    assert len({after[k] for k in moved}) == 2


@pytest.mark.parametrize("text, expected", [
    ("inference:50054", [Target("inference", 50054)]),
    (" b:2, a:1 ,", [Target("a", 1), Target("b", 2)]),
    ("[::1]:50054", [Target("::1", 50054)]),
    ("127.0.0.1:9,127.0.0.1:9", [Target("127.0.0.1", 9)]),
])
def test_targets_parse(text, expected):
    assert parse_targets(text) == expected


@pytest.mark.parametrize("text", ["", "inference", "inference:", "inference:0", "a:70000",
                                  "::1:5", "[::1]5", "host:port"])
def test_bad_targets_are_refused(text):
    with pytest.raises(ValueError):
        parse_targets(text)


def test_settings_refuse_a_bad_inference_target():
    from pydantic import ValidationError

    from services.gateway.settings import GatewaySettings

    with pytest.raises(ValidationError, match="inference_target"):
        GatewaySettings(internal_token="t" * 32, jwt_signing_keys='{"k": "' + "s" * 40 + '"}',
                        jwt_active_kid="k", inference_target="inference")


class FakeDns:
    def __init__(self, records):
        self.records = records
        self.asked = []

    async def __call__(self, host, port):
        self.asked.append(host)
        answer = self.records.get(host)
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(answer)


async def test_a_name_resolves_to_one_endpoint_per_address_with_its_tls_name():
    dns = FakeDns({"inference.ns.svc": ["10.1.0.7", "10.1.0.5"]})
    found, failed = await Resolver(parse_targets("inference.ns.svc:50054,10.9.9.9:7"),
                                   lookup=dns).resolve()
    assert failed == []
    assert found == {Endpoint("10.1.0.5:50054", "inference.ns.svc"),
                     Endpoint("10.1.0.7:50054", "inference.ns.svc"),
                     Endpoint("10.9.9.9:7")}
    assert dns.asked == ["inference.ns.svc"]  # addresses are not looked up


async def test_a_failed_lookup_keeps_the_last_answer_and_a_new_answer_replaces_it():
    dns = FakeDns({"inference": ["10.1.0.1", "10.1.0.2"]})
    resolver = Resolver(parse_targets("inference:50054"), lookup=dns)
    first, _ = await resolver.resolve()
    dns.records["inference"] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure")
    kept, failed = await resolver.resolve()
    assert kept == first and failed == [Target("inference", 50054)]
    dns.records["inference"] = ["10.1.0.2", "10.1.0.3"]
    now, failed = await resolver.resolve()
    assert failed == [] and {e.address for e in now} == {"10.1.0.2:50054", "10.1.0.3:50054"}
