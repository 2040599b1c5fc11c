"""Profile's domain enums mirror the proto enums the servicer translates them to."""

from __future__ import annotations

import pytest

from avatario.common.v1 import avatar_pb2, chat_pb2, family_pb2
from services.profile.domain import enums


@pytest.mark.parametrize(("domain", "proto"), [
    (enums.ConsentScope, family_pb2.ConsentScope),
    (enums.AvatarSlot, avatar_pb2.AvatarSlot),
    (enums.EvolutionStage, avatar_pb2.EvolutionStage),
    (enums.FinishReason, chat_pb2.FinishReason),
    (enums.Role, chat_pb2.Role),
    (enums.FamilyRole, family_pb2.FamilyRole),
])
def test_domain_enum_mirrors_proto_enum(domain, proto):
    wire = {name: value for name, value in proto.items() if value != 0}
    assert {m.name: m.value for m in domain} == wire
