"""Rows -> protobuf messages (the only place that knows both)."""

from __future__ import annotations

import json

from avatario.common.v1 import avatar_pb2, chat_pb2, family_pb2
from avatario.profile.v1 import profile_pb2
from services.common.timeutil import to_ts
from services.profile import models
from services.profile.domain import catalog, progression


def parent(row: models.Parent) -> family_pb2.Parent:
    return family_pb2.Parent(
        parent_id=row.id, family_id=row.family_id, email=row.email,
        display_name=row.display_name, created_at=to_ts(row.created_at), role=row.role,
    )


def consent(row: models.Consent) -> family_pb2.Consent:
    return family_pb2.Consent(
        consent_id=row.id, family_id=row.family_id, parent_id=row.parent_id, scope=row.scope,
        policy_version=row.policy_version, granted_at=to_ts(row.granted_at),
        withdrawn_at=to_ts(row.withdrawn_at), withdrawn_by_parent_id=row.withdrawn_by or "",
    )


def child(row: models.Child) -> family_pb2.Child:
    return family_pb2.Child(
        child_id=row.id, family_id=row.family_id, nickname=row.nickname,
        birth_year=row.birth_year, birth_month=row.birth_month, created_at=to_ts(row.created_at),
    )


def item(entry: catalog.CatalogItem) -> avatar_pb2.AvatarItem:
    return avatar_pb2.AvatarItem(
        item_id=entry.item_id, slot=entry.slot, name=entry.name, unlock_level=entry.unlock_level
    )


def avatar(row: models.Avatar, item_ids: list[str]) -> avatar_pb2.Avatar:
    p = progression.progress(row.xp)
    return avatar_pb2.Avatar(
        child_id=row.child_id, xp=p.xp, level=p.level, stage=p.stage,
        xp_into_level=p.xp_into_level, xp_for_next_level=p.xp_for_next_level,
        equipped=[item(catalog.BY_ID[i]) for i in item_ids if i in catalog.BY_ID],
        updated_at=to_ts(row.updated_at),
    )


def device(row: models.Device) -> family_pb2.Device:
    return family_pb2.Device(
        device_id=row.id, family_id=row.family_id, child_id=row.child_id, name=row.name,
        paired_at=to_ts(row.paired_at), revoked_at=to_ts(row.revoked_at),
    )


def conversation(row: models.Conversation, turn_limit: int = 0) -> chat_pb2.Conversation:
    return chat_pb2.Conversation(
        conversation_id=row.id, family_id=row.family_id, child_id=row.child_id, title=row.title,
        turn_count=row.turn_count, created_at=to_ts(row.created_at),
        updated_at=to_ts(row.updated_at), owner_parent_id=row.owner_parent_id or "",
        shared=row.shared, turn_limit=turn_limit,
    )


def message(row: models.ChatMessage) -> chat_pb2.ChatMessage:
    return chat_pb2.ChatMessage(
        message_id=row.id, conversation_id=row.conversation_id, turn_id=row.turn_id,
        role=row.role, text=row.text, finish_reason=row.finish_reason, complete=row.complete,
        created_at=to_ts(row.created_at),
    )


def audit_event(row: models.AuditEvent) -> family_pb2.AuditEvent:
    return family_pb2.AuditEvent(
        event_id=row.id, family_id=row.family_id, actor=row.actor, action=row.action,
        target_id=row.target_id, occurred_at=to_ts(row.occurred_at),
        details=json.loads(row.details or "{}"),
    )


def xp_award(row: models.XpAward) -> profile_pb2.XpAward:
    return profile_pb2.XpAward(
        child_id=row.child_id, source_id=row.source_id, amount=row.amount, reason=row.reason,
        awarded_at=to_ts(row.awarded_at),
    )


def invite(row: models.FamilyInvite) -> family_pb2.FamilyInvite:
    return family_pb2.FamilyInvite(
        invite_id=row.id, family_id=row.family_id, created_by_parent_id=row.created_by,
        created_at=to_ts(row.created_at), expires_at=to_ts(row.expires_at),
        used_at=to_ts(row.used_at), used_by_parent_id=row.used_by or "",
    )


def pairing(row: models.PairingCode) -> family_pb2.PairingRecord:
    return family_pb2.PairingRecord(
        pairing_id=row.id, family_id=row.family_id, child_id=row.child_id,
        created_by_parent_id=row.created_by, created_at=to_ts(row.created_at),
        expires_at=to_ts(row.expires_at), used_at=to_ts(row.used_at),
    )


def export_record(kind: str, rec, turn_limit: int = 0) -> profile_pb2.FamilyExportRecord:
    """One record of services.profile.domain.export.records as protobuf."""
    if kind == "header":
        return profile_pb2.FamilyExportRecord(header=profile_pb2.FamilyExportHeader(
            family_id=rec.family_id, exported_at=to_ts(rec.exported_at),
            exported_by_parent_id=rec.exported_by))
    if kind == "avatar":
        return profile_pb2.FamilyExportRecord(avatar=avatar(rec.avatar, rec.item_ids))
    if kind == "conversation":
        return profile_pb2.FamilyExportRecord(conversation=conversation(rec, turn_limit))
    return profile_pb2.FamilyExportRecord(**{kind: _RECORD[kind](rec)})


_RECORD = {
    "parent": parent, "consent": consent, "invite": invite, "child": child,
    "xp_award": xp_award, "pairing": pairing, "device": device, "message": message,
    "audit_event": audit_event,
}
