"""Audit log, export and erasure (afterwards no row in any table refers to the family)."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import func, select

from avatario.common.v1 import chat_pb2
from avatario.profile.v1 import profile_pb2 as pb
from services.profile.models import ErasedFamily, metadata
from tests.integration.profile.support import (
    ANALYTICS,
    CHAT,
    CHILD,
    PASSWORD,
    fails,
    new_family,
    new_id,
)

C = grpc.StatusCode
# The tables of family data: everything but the erasure tombstones.
FAMILY_TABLES = [t for t in metadata.sorted_tables if t is not ErasedFamily.__table__]


async def populate(profile, fam) -> dict[str, list[str]]:
    """Give the family one of everything; returns the ids it owns."""
    s = profile.stub
    second = (await s.CreateChild(pb.CreateChildRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, nickname="Kit",
        birth_year=profile.clock.now.year - 3, birth_month=2))).child.child_id
    await s.CustomizeAvatar(pb.CustomizeAvatarRequest(
        family_id=fam.family_id, child_id=fam.child_id, item_ids=["base-bunny", "acc-cap"]))
    await s.AwardXp(pb.AwardXpRequest(family_id=fam.family_id, child_id=fam.child_id,
                                      amount=120, source_id=f"session:{new_id()}"))
    code = (await s.CreatePairingCode(pb.CreatePairingCodeRequest(
        family_id=fam.family_id, child_id=fam.child_id, parent_id=fam.parent_id))).code
    await s.CreatePairingCode(pb.CreatePairingCodeRequest(
        family_id=fam.family_id, child_id=second, parent_id=fam.parent_id))  # left unused
    device = (await s.RedeemPairingCode(pb.RedeemPairingCodeRequest(
        code=code, device_name="Tablet"))).device.device_id
    conv = (await s.CreateConversation(pb.CreateConversationRequest(
        family_id=fam.family_id, child_id=fam.child_id, title="Bedtime"))).conversation
    turn = await s.AppendTurn(pb.AppendTurnRequest(
        family_id=fam.family_id, conversation_id=conv.conversation_id, turn_id=new_id(),
        user_message="Bedtime tips?", assistant_message="A calm routine.",
        finish_reason=chat_pb2.FINISH_REASON_STOP))
    return {
        "family": [fam.family_id], "parents": [fam.parent_id],
        "children": sorted([fam.child_id, second]), "devices": [device],
        "conversations": [conv.conversation_id],
        "messages": [turn.user_message.message_id, turn.assistant_message.message_id],
        "turns": [turn.user_message.turn_id],
    }


async def table_counts(profile) -> dict[str, int]:
    out = {}
    async with profile.db.session() as session:
        for table in FAMILY_TABLES:
            out[table.name] = (await session.execute(
                select(func.count()).select_from(table))).scalar_one()
    return out


async def test_audit_events_newest_first_in_pages(profile):
    fam = await new_family(profile, scopes=(CHILD, CHAT, ANALYTICS))
    every = (await profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
        family_id=fam.family_id))).events
    assert [e.action for e in every] == [
        "child.created", "consent.recorded", "consent.recorded", "consent.recorded",
        "parent.created"]
    paged, token = [], ""
    while True:
        resp = await profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
            family_id=fam.family_id, page_size=2, page_token=token))
        paged.extend(resp.events)
        token = resp.next_page_token
        if not token:
            break
    assert paged == list(every)
    for bad in ({"page_size": -1}, {"page_size": 201}, {"page_token": "nope!"}):
        field = "page_size" if "page_size" in bad else "page_token"
        await fails(profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
            family_id=fam.family_id, **bad)), C.INVALID_ARGUMENT, field)
    await fails(profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(family_id=new_id())),
                C.NOT_FOUND)
    await fails(profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(family_id="f")),
                C.INVALID_ARGUMENT, "family_id")


async def test_export_holds_everything(profile):
    fam = await new_family(profile)
    ids = await populate(profile, fam)
    other = await new_family(profile)
    export = (await profile.stub.ExportFamilyData(pb.ExportFamilyDataRequest(
        family_id=fam.family_id, parent_id=fam.parent_id))).export
    assert export.family_id == fam.family_id and export.exported_at.seconds > 0
    assert [p.parent_id for p in export.parents] == ids["parents"]
    assert export.parents[0].email == fam.email.casefold()
    assert {c.scope for c in export.consents} == {CHILD, CHAT}
    assert sorted(c.child_id for c in export.children) == ids["children"]
    assert sorted(a.child_id for a in export.avatars) == ids["children"]
    first = next(a for a in export.avatars if a.child_id == fam.child_id)
    assert first.xp == 120 and [i.item_id for i in first.equipped] == ["base-bunny", "acc-cap"]
    assert [x.amount for x in export.xp_awards] == [120]
    assert [d.device_id for d in export.devices] == ids["devices"]
    assert [c.conversation_id for c in export.conversations] == ids["conversations"]
    assert [m.text for m in export.messages] == ["Bedtime tips?", "A calm routine."]
    actions = [e.action for e in export.audit_events]
    assert actions[-1] == "family.exported"
    assert {"parent.created", "consent.recorded", "child.created", "pairing_code.created",
            "device.paired"} <= set(actions)
    assert other.child_id not in str(export)
    await fails(profile.stub.ExportFamilyData(pb.ExportFamilyDataRequest(
        family_id=fam.family_id, parent_id=other.parent_id)), C.NOT_FOUND)
    await fails(profile.stub.ExportFamilyData(pb.ExportFamilyDataRequest(
        family_id=new_id(), parent_id=fam.parent_id)), C.NOT_FOUND)
    await fails(profile.stub.ExportFamilyData(pb.ExportFamilyDataRequest(
        family_id=fam.family_id, parent_id="")), C.INVALID_ARGUMENT, "parent_id")


async def test_erase_leaves_no_row_that_refers_to_the_family(profile):
    fam = await new_family(profile)
    ids = await populate(profile, fam)
    other = await new_family(profile)
    other_ids = await populate(profile, other)
    await profile.stub.ExportFamilyData(pb.ExportFamilyDataRequest(
        family_id=fam.family_id, parent_id=fam.parent_id))
    before = await table_counts(profile)

    resp = await profile.stub.EraseFamily(pb.EraseFamilyRequest(family_id=fam.family_id))
    assert sorted(resp.child_ids) == ids["children"]
    assert list(resp.conversation_ids) == ids["conversations"]
    after = await table_counts(profile)
    assert set(resp.deleted_rows) == {t.name for t in FAMILY_TABLES}
    for table, count in before.items():
        assert after[table] == count - resp.deleted_rows[table], table
    assert resp.deleted_rows["families"] == 1 and resp.deleted_rows["chat_messages"] == 2

    # Scan every column of every row of every table for anything of the family
    # (the tombstone holds the family id and a time, nothing else: see test_erasure).
    needles = {v for values in ids.values() for v in values} | {fam.email.casefold()}
    other_needles = {v for values in other_ids.values() for v in values}
    found_other = set()
    async with profile.db.session() as session:
        for table in FAMILY_TABLES:
            for row in (await session.execute(select(table))).all():
                for value in row:
                    text = str(value)
                    hits = [n for n in needles if n in text]
                    assert not hits, f"{table.name} still mentions {hits}"
                    found_other |= {n for n in other_needles if n in text}
    assert found_other == other_needles  # the other family is intact

    await fails(profile.stub.Authenticate(pb.AuthenticateRequest(
        email=fam.email, password=PASSWORD)), C.UNAUTHENTICATED)
    await fails(profile.stub.GetChild(pb.GetChildRequest(
        family_id=fam.family_id, child_id=fam.child_id)), C.NOT_FOUND)
    await fails(profile.stub.EraseFamily(pb.EraseFamilyRequest(family_id=fam.family_id)),
                C.NOT_FOUND)
    # The email is free again; the other family still works.
    await profile.stub.CreateParent(pb.CreateParentRequest(
        email=fam.email, password=PASSWORD, display_name="Again"))
    await profile.stub.GetChild(pb.GetChildRequest(
        family_id=other.family_id, child_id=other.child_id))


@pytest.mark.parametrize("family_id", ["", "x", "0" * 36])
async def test_erase_bad_input(profile, family_id):
    await fails(profile.stub.EraseFamily(pb.EraseFamilyRequest(family_id=family_id)),
                C.INVALID_ARGUMENT, "family_id")
