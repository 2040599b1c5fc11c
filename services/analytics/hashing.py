"""Canonical content hashes of submissions: what a retry must match.

The hash covers the family, the child and the submitted message as the
service will store it (child_id filled in from the ChildRef). Protobuf's
deterministic serialization is canonical for equal messages: map entries
(the Struct fields of stimulus/response) are sorted by key, so a client that
rebuilds its request with keys in another order still sends the same content.
Unknown fields are dropped first, so a newer client's extra fields do not
make an otherwise identical retry look different.
"""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message

from avatario.common.v1 import play_pb2


def _digest(family_id: str, message: Message) -> str:
    h = hashlib.sha256()
    h.update(b"avatario.analytics/v1\0")
    h.update(family_id.encode())
    h.update(b"\0")
    h.update(message.SerializeToString(deterministic=True))
    return h.hexdigest()


def _normalized(message: Message, child_id: str) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    copy.DiscardUnknownFields()
    copy.child_id = child_id  # type: ignore[attr-defined]
    return copy


def session_hash(family_id: str, child_id: str, session: play_pb2.GameSession) -> str:
    return _digest(family_id, _normalized(session, child_id))


def checkin_hash(family_id: str, child_id: str, checkin: play_pb2.MoodCheckIn) -> str:
    return _digest(family_id, _normalized(checkin, child_id))
