"""Avatar catalog, customization and XP (idempotent, also under concurrency)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from avatario.common.v1 import avatar_pb2
from avatario.profile.v1 import profile_pb2 as pb
from services.common.db import in_transaction
from services.profile.domain import avatars, catalog, progression
from services.profile.models import Avatar, XpAward
from tests.integration.profile.support import (
    CHAT,
    CHILD,
    count_rows,
    fails,
    new_family,
    new_id,
    precondition_types,
)

C = grpc.StatusCode


async def test_list_avatar_items_pages_through_the_whole_catalog(profile):
    seen, token = [], ""
    while True:
        resp = await profile.stub.ListAvatarItems(pb.ListAvatarItemsRequest(
            page_size=7, page_token=token))
        seen.extend(resp.items)
        token = resp.next_page_token
        if not token:
            break
    assert [i.item_id for i in seen] == [i.item_id for i in catalog.CATALOG]
    assert len(seen) >= 20
    assert {i.slot for i in seen} == {1, 2, 3, 4}
    everything = await profile.stub.ListAvatarItems(pb.ListAvatarItemsRequest())
    assert len(everything.items) == len(catalog.CATALOG) and not everything.next_page_token


@pytest.mark.parametrize(("size", "token", "field"),
                         [(-5, "", "page_size"), (1000, "", "page_size"),
                          (0, "%%%", "page_token"), (0, "eyJuZXh0IjoiYSJ9", "page_token"),
                          (0, "eyJuZXh0IjotMX0", "page_token"),
                          (0, "eyJuZXh0Ijo5OTl9", "page_token")])
async def test_list_avatar_items_bad_pages(profile, size, token, field):
    await fails(profile.stub.ListAvatarItems(pb.ListAvatarItemsRequest(
        page_size=size, page_token=token)), C.INVALID_ARGUMENT, field)


def customize(fam, items, **kw):
    base = dict(family_id=fam.family_id, child_id=fam.child_id, item_ids=items)
    base.update(kw)
    return pb.CustomizeAvatarRequest(**base)


async def test_customize(profile):
    fam = await new_family(profile)
    items = ["base-bunny", "color-leaf", "outfit-tshirt", "acc-cap"]
    avatar = (await profile.stub.CustomizeAvatar(customize(fam, items))).avatar
    assert [i.item_id for i in avatar.equipped] == items
    got = (await profile.stub.GetAvatar(pb.GetAvatarRequest(
        family_id=fam.family_id, child_id=fam.child_id))).avatar
    assert got == avatar


@pytest.mark.parametrize(
    ("items", "field"),
    [
        (["base-blob", "no-such-item"], "item_ids[1]"),
        (["", "base-blob"], "item_ids[0]"),
        (["base-blob", "x" * 65], "item_ids[1]"),
        (["base-blob", "base-bunny"], "item_ids[1]"),
        (["base-blob", "color-sky", "color-leaf"], "item_ids[2]"),
        (["base-blob", "acc-cap", "acc-cap"], "item_ids[2]"),
        (["base-blob"] + ["acc-cap"] * 6, "item_ids"),
        (["color-sky"], "item_ids"),
        ([], "item_ids"),
    ],
)
async def test_customize_bad_input(profile, items, field):
    fam = await new_family(profile)
    before = (await profile.stub.GetAvatar(pb.GetAvatarRequest(
        family_id=fam.family_id, child_id=fam.child_id))).avatar
    await fails(profile.stub.CustomizeAvatar(customize(fam, items)), C.INVALID_ARGUMENT, field)
    after = (await profile.stub.GetAvatar(pb.GetAvatarRequest(
        family_id=fam.family_id, child_id=fam.child_id))).avatar
    assert after == before


async def test_customize_locked_item_until_the_level_is_reached(profile):
    fam = await new_family(profile)
    locked = ["base-fox", "acc-cap", "acc-glasses", "acc-scarf"]  # fox: level 3
    err = await fails(profile.stub.CustomizeAvatar(customize(fam, locked)),
                      C.FAILED_PRECONDITION)
    assert precondition_types(err) == ["ITEM_LOCKED"]
    resp = await profile.stub.AwardXp(pb.AwardXpRequest(
        family_id=fam.family_id, child_id=fam.child_id, amount=progression.xp_to_reach(3),
        source_id="session:lvl3"))
    assert resp.avatar.level == 3 and resp.leveled_up
    avatar = (await profile.stub.CustomizeAvatar(customize(fam, locked))).avatar
    assert len(avatar.equipped) == 4


async def test_customize_rules_scoping_and_consent(profile):
    fam = await new_family(profile)
    other = await new_family(profile)
    await fails(profile.stub.CustomizeAvatar(customize(other, ["base-blob"],
                                                       child_id=fam.child_id)), C.NOT_FOUND)
    await fails(profile.stub.CustomizeAvatar(customize(fam, ["base-blob"], child_id="1")),
                C.INVALID_ARGUMENT, "child_id")
    await profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, scope=CHILD))
    err = await fails(profile.stub.CustomizeAvatar(customize(fam, ["base-bunny"])),
                      C.FAILED_PRECONDITION)
    assert precondition_types(err) == ["CONSENT_REQUIRED"]


def award(fam, amount=50, source="session:1", **kw):
    base = dict(family_id=fam.family_id, child_id=fam.child_id, amount=amount,
                source_id=source, reason="played memory match")
    base.update(kw)
    return pb.AwardXpRequest(**base)


async def test_award_xp_is_idempotent_per_source(profile):
    fam = await new_family(profile)
    first = await profile.stub.AwardXp(award(fam, 150))
    assert first.applied and first.leveled_up
    assert (first.avatar.xp, first.avatar.level) == (150, 2)
    assert (first.avatar.xp_into_level, first.avatar.xp_for_next_level) == (50, 200)
    again = await profile.stub.AwardXp(award(fam, 150))
    assert not again.applied and not again.leveled_up and again.avatar.xp == 150
    await fails(profile.stub.AwardXp(award(fam, 151)), C.ALREADY_EXISTS)
    more = await profile.stub.AwardXp(award(fam, 10, "session:2"))
    assert more.applied and not more.leveled_up and more.avatar.xp == 160
    assert await count_rows(profile, XpAward, child_id=fam.child_id) == 2


async def test_award_xp_reaches_the_top_level(profile):
    fam = await new_family(profile)
    total = 0
    for i in range(6):
        resp = await profile.stub.AwardXp(award(fam, 10_000, f"session:{i}"))
        total += 10_000
    assert resp.avatar.xp == total
    assert resp.avatar.level == progression.MAX_LEVEL
    assert resp.avatar.stage == avatar_pb2.EVOLUTION_STAGE_CHAMPION
    assert resp.avatar.xp_for_next_level == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(amount=0), "amount"),
        (dict(amount=-5), "amount"),
        (dict(amount=10_001), "amount"),
        (dict(amount=2**62), "amount"),
        (dict(source_id=""), "source_id"),
        (dict(source_id="s" * 129), "source_id"),
        (dict(source_id="session 1"), "source_id"),
        (dict(reason="r" * 201), "reason"),
        (dict(reason="line\nbreak"), "reason"),
        (dict(child_id=""), "child_id"),
        (dict(family_id="nope"), "family_id"),
    ],
)
async def test_award_xp_bad_input(profile, changes, field):
    fam = await new_family(profile)
    await fails(profile.stub.AwardXp(award(fam, **changes)), C.INVALID_ARGUMENT, field)
    assert await count_rows(profile, XpAward) == 0


async def test_award_xp_unknown_child_and_consent(profile):
    fam = await new_family(profile)
    await fails(profile.stub.AwardXp(award(fam, child_id=new_id())), C.NOT_FOUND)
    await profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, scope=CHILD))
    await fails(profile.stub.AwardXp(award(fam)), C.FAILED_PRECONDITION)
    assert await count_rows(profile, XpAward) == 0


async def test_concurrent_awards_with_one_source_count_once(profile):
    fam = await new_family(profile, scopes=(CHILD, CHAT))
    for round_ in range(3):
        calls = [profile.stub.AwardXp(award(fam, 40, f"session:race-{round_}"))
                 for _ in range(4)]
        results = await asyncio.gather(*calls)
        assert sum(r.applied for r in results) == 1
    avatar = (await profile.stub.GetAvatar(pb.GetAvatarRequest(
        family_id=fam.family_id, child_id=fam.child_id))).avatar
    assert avatar.xp == 120
    assert await count_rows(profile, XpAward, child_id=fam.child_id) == 3


async def test_concurrent_awards_on_separate_sessions(profile):
    """Two transactions on their own connections, racing in the repository."""
    fam = await new_family(profile)

    async def one(source, amount=25):
        return await in_transaction(profile.db, lambda s: avatars.award_xp(
            s, family_id=fam.family_id, child_id=fam.child_id, amount=amount,
            source_id=source, reason="", now=profile.clock()))

    results = await asyncio.gather(one("game:a"), one("game:a"), one("game:b"), one("game:b"))
    assert sorted(r.applied for r in results) == [False, False, True, True]
    async with profile.db.session() as s:
        assert (await s.get(Avatar, fam.child_id)).xp == 50


async def test_get_avatar_bad_input_and_scoping(profile):
    fam = await new_family(profile)
    other = await new_family(profile)
    await fails(profile.stub.GetAvatar(pb.GetAvatarRequest(
        family_id=fam.family_id, child_id="")), C.INVALID_ARGUMENT, "child_id")
    await fails(profile.stub.GetAvatar(pb.GetAvatarRequest(
        family_id="fam", child_id=fam.child_id)), C.INVALID_ARGUMENT, "family_id")
    await fails(profile.stub.GetAvatar(pb.GetAvatarRequest(
        family_id=other.family_id, child_id=fam.child_id)), C.NOT_FOUND)
    await fails(profile.stub.GetAvatar(pb.GetAvatarRequest(
        family_id=fam.family_id, child_id=new_id())), C.NOT_FOUND)


async def test_a_second_award_waits_for_the_first_and_then_counts_nothing(profile):
    """Interleaved by hand: B runs while A's transaction is open, so B must wait on
    the unique key (PostgreSQL) or the write lock (SQLite), then find A's row."""
    fam = await new_family(profile)

    def award_in(session):
        return avatars.award_xp(
            session, family_id=fam.family_id, child_id=fam.child_id, amount=30,
            source_id="session:interleaved", reason="", now=profile.clock())

    async with profile.db.transaction() as session_a:
        first = await award_in(session_a)
        assert first.applied
        second = asyncio.create_task(in_transaction(profile.db, award_in))
        await asyncio.sleep(0.3)
        assert not second.done()
    result = await asyncio.wait_for(second, 30)
    assert not result.applied and result.state.avatar.xp == 30
