"""The domain's enums. Their names and values mirror the proto enums of
avatario.common.v1 (UNSPECIFIED left out: it is never a valid domain value), so
the servicer translates by value (services.profile.convert) and a unit test
keeps the two in step."""

from __future__ import annotations

from enum import IntEnum


class ConsentScope(IntEnum):
    CONSENT_SCOPE_CHILD_PROFILE = 1
    CONSENT_SCOPE_GAMEPLAY_ANALYTICS = 2
    CONSENT_SCOPE_CHAT_ASSISTANT = 3


class AvatarSlot(IntEnum):
    AVATAR_SLOT_BASE = 1
    AVATAR_SLOT_COLOR = 2
    AVATAR_SLOT_OUTFIT = 3
    AVATAR_SLOT_ACCESSORY = 4


class EvolutionStage(IntEnum):
    EVOLUTION_STAGE_EGG = 1
    EVOLUTION_STAGE_HATCHLING = 2
    EVOLUTION_STAGE_EXPLORER = 3
    EVOLUTION_STAGE_ADVENTURER = 4
    EVOLUTION_STAGE_CHAMPION = 5


class FinishReason(IntEnum):
    FINISH_REASON_STOP = 1
    FINISH_REASON_LENGTH = 2
    FINISH_REASON_STOP_SEQUENCE = 3
    FINISH_REASON_SAFETY = 4
    FINISH_REASON_CANCELLED = 5
    FINISH_REASON_ERROR = 6


class Role(IntEnum):
    ROLE_PARENT = 1
    ROLE_ASSISTANT = 2


class FamilyRole(IntEnum):
    FAMILY_ROLE_OWNER = 1
    FAMILY_ROLE_PARENT = 2
