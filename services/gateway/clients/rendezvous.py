"""Rendezvous (highest-random-weight) hashing: which replica serves a key.

Every (key, member) pair gets a pseudo-random weight; a key's order of members is
by weight, highest first, and it goes to the first member of that order that can
take it. The weight of a pair does not depend on the other members, so:

* a member joining takes exactly the keys for which it now has the highest weight
  (about 1/n of them) and no key moves between the members already there;
* a member leaving gives away only its own keys, each to the next member in that
  key's own order (spread evenly over the rest, not all to one neighbour).

The weight is 64 bits of blake2b over the member and the key, so every gateway
replica (and every restart) computes the same order without coordination.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["rank", "weight"]


def weight(key: str, member: str) -> int:
    """The pair's weight: the same on every process, for every run."""
    digest = hashlib.blake2b(
        member.encode() + b"\x00" + key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(key: str, members: Iterable[str]) -> list[str]:
    """The members in `key`'s order of preference (ties, a 2^-64 event, by name)."""
    return sorted(set(members), key=lambda m: (weight(key, m), m), reverse=True)
