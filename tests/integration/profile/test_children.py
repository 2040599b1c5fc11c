"""Children: consent rule, plausible birth dates, scoping, paging, atomicity."""

from __future__ import annotations

import grpc
import pytest

from avatario.common.v1 import avatar_pb2
from avatario.profile.v1 import profile_pb2 as pb
from services.profile.models import AuditEvent, Avatar, Child
from services.profile.repo import children as children_repo
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


def create(profile, fam, **kw):
    base = dict(family_id=fam.family_id, parent_id=fam.parent_id, nickname="Bo",
                birth_year=profile.clock.now.year - 6, birth_month=1)
    base.update(kw)
    return pb.CreateChildRequest(**base)


async def test_create_child_with_a_default_avatar(profile):
    fam = await new_family(profile, child=False)
    child = (await profile.stub.CreateChild(create(profile, fam, nickname=" Bo "))).child
    assert child.nickname == "Bo" and child.family_id == fam.family_id
    got = (await profile.stub.GetChild(pb.GetChildRequest(
        family_id=fam.family_id, child_id=child.child_id))).child
    assert got == child
    avatar = (await profile.stub.GetAvatar(pb.GetAvatarRequest(
        family_id=fam.family_id, child_id=child.child_id))).avatar
    assert (avatar.xp, avatar.level, avatar.stage) == (0, 1, avatar_pb2.EVOLUTION_STAGE_EGG)
    assert [i.slot for i in avatar.equipped] == [avatar_pb2.AVATAR_SLOT_BASE,
                                                 avatar_pb2.AVATAR_SLOT_COLOR]
    events = (await profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
        family_id=fam.family_id))).events
    assert events[0].action == "child.created" and events[0].target_id == child.child_id


async def test_create_child_without_consent_leaves_nothing(profile):
    fam = await new_family(profile, scopes=(CHAT,), child=False)
    audit_before = await count_rows(profile, AuditEvent)
    err = await fails(profile.stub.CreateChild(create(profile, fam)), C.FAILED_PRECONDITION)
    assert precondition_types(err) == ["CONSENT_REQUIRED"]
    assert await count_rows(profile, Child) == 0
    assert await count_rows(profile, Avatar) == 0
    assert await count_rows(profile, AuditEvent) == audit_before


async def test_withdrawn_consent_blocks_child_writes(profile):
    fam = await new_family(profile)
    await profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, scope=CHILD))
    await fails(profile.stub.CreateChild(create(profile, fam)), C.FAILED_PRECONDITION)
    await fails(profile.stub.UpdateChild(pb.UpdateChildRequest(
        family_id=fam.family_id, child_id=fam.child_id, nickname="New")), C.FAILED_PRECONDITION)
    # Reads still work.
    await profile.stub.GetChild(pb.GetChildRequest(family_id=fam.family_id,
                                                   child_id=fam.child_id))


async def test_failure_after_the_first_write_rolls_everything_back(profile, monkeypatch):
    """A bug after the child row was flushed: INTERNAL, and no row survives."""
    fam = await new_family(profile, child=False)
    audit_before = await count_rows(profile, AuditEvent)

    def broken_audit(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(children_repo, "audit", broken_audit)
    err = await fails(profile.stub.CreateChild(create(profile, fam)), C.INTERNAL)
    assert "boom" not in err.details()
    assert await count_rows(profile, Child) == 0
    assert await count_rows(profile, Avatar) == 0
    assert await count_rows(profile, AuditEvent) == audit_before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(nickname=""), "nickname"),
        (dict(nickname="   "), "nickname"),
        (dict(nickname="N" * 41), "nickname"),
        (dict(nickname="a\tb\x00"), "nickname"),
        (dict(birth_month=0), "birth_month"),
        (dict(birth_month=13), "birth_month"),
        (dict(birth_month=-1), "birth_month"),
        (dict(birth_year=0), "birth_year"),
        (dict(birth_year=-2000), "birth_year"),
        (dict(birth_year=99999), "birth_year"),
        (dict(birth_year="next"), "birth_year"),  # next year: the future
        (dict(birth_year="now", birth_month=12), "birth_month"),  # later this year
        (dict(birth_year="now", birth_month=6), "birth_year"),  # this month: under two
        (dict(birth_year="now", birth_month=1), "birth_year"),  # under two
        (dict(birth_year="old"), "birth_year"),  # 15 or more
        (dict(family_id="nope"), "family_id"),
        (dict(parent_id=""), "parent_id"),
    ],
)
async def test_create_child_bad_input(profile, changes, field):
    # mid-June, so that "later this year" exists whatever today's date is
    profile.clock.now = profile.clock.now.replace(month=6, day=15)
    fam = await new_family(profile, child=False)
    year = profile.clock.now.year
    years = {"next": year + 1, "now": year, "old": year - 16}
    if isinstance(changes.get("birth_year"), str):
        changes = {**changes, "birth_year": years[changes["birth_year"]]}
    await fails(profile.stub.CreateChild(create(profile, fam, **changes)),
                C.INVALID_ARGUMENT, field)
    assert await count_rows(profile, Child) == 0


async def test_create_child_unknown_ids(profile):
    fam = await new_family(profile, child=False)
    other = await new_family(profile, child=False)
    await fails(profile.stub.CreateChild(create(profile, fam, family_id=new_id())), C.NOT_FOUND)
    await fails(profile.stub.CreateChild(create(profile, fam, parent_id=other.parent_id)),
                C.NOT_FOUND)
    assert await count_rows(profile, Child) == 0


async def test_get_child_scoped(profile):
    fam = await new_family(profile)
    other = await new_family(profile, child=False)
    await fails(profile.stub.GetChild(pb.GetChildRequest(
        family_id=other.family_id, child_id=fam.child_id)), C.NOT_FOUND)
    await fails(profile.stub.GetChild(pb.GetChildRequest(
        family_id=fam.family_id, child_id=new_id())), C.NOT_FOUND)
    await fails(profile.stub.GetChild(pb.GetChildRequest(
        family_id=fam.family_id, child_id=fam.child_id.replace("-", ""))),
        C.INVALID_ARGUMENT, "child_id")


async def test_list_children_pages(profile):
    fam = await new_family(profile, child=False)
    made = [(await profile.stub.CreateChild(create(profile, fam, nickname=f"K{i}"))).child
            for i in range(5)]
    other = await new_family(profile)
    seen, token = [], ""
    while True:
        resp = await profile.stub.ListChildren(pb.ListChildrenRequest(
            family_id=fam.family_id, page_size=2, page_token=token))
        seen.extend(c.child_id for c in resp.children)
        assert len(resp.children) <= 2
        token = resp.next_page_token
        if not token:
            break
    assert seen == [c.child_id for c in made]
    assert other.child_id not in seen
    all_at_once = await profile.stub.ListChildren(pb.ListChildrenRequest(
        family_id=fam.family_id))
    assert len(all_at_once.children) == 5 and all_at_once.next_page_token == ""


async def test_list_children_pages_through_equal_timestamps(profile):
    """Keyset pages order by (created_at, id): ties on the time still page exactly."""
    fam = await new_family(profile, child=False)
    profile.clock.frozen = True
    made = {(await profile.stub.CreateChild(create(profile, fam, nickname=f"T{i}"))).child.child_id
            for i in range(5)}
    seen, token = [], ""
    while True:
        resp = await profile.stub.ListChildren(pb.ListChildrenRequest(
            family_id=fam.family_id, page_size=2, page_token=token))
        seen.extend(c.child_id for c in resp.children)
        token = resp.next_page_token
        if not token:
            break
    assert seen == sorted(made)


@pytest.mark.parametrize(
    ("size", "token", "field"),
    [(-1, "", "page_size"), (201, "", "page_size"), (0, "!!!", "page_token"),
     (0, "eyJ0IjoxfQ", "page_token"), (0, "x" * 600, "page_token"),
     (0, "eyJ0Ijoibm90LWEtZGF0ZSIsImlkIjoiYSJ9", "page_token")],
)
async def test_list_children_bad_pages(profile, size, token, field):
    fam = await new_family(profile)
    await fails(profile.stub.ListChildren(pb.ListChildrenRequest(
        family_id=fam.family_id, page_size=size, page_token=token)), C.INVALID_ARGUMENT, field)


async def test_list_children_unknown_family(profile):
    await fails(profile.stub.ListChildren(pb.ListChildrenRequest(family_id=new_id())),
                C.NOT_FOUND)


async def test_update_child(profile):
    fam = await new_family(profile)
    resp = await profile.stub.UpdateChild(pb.UpdateChildRequest(
        family_id=fam.family_id, child_id=fam.child_id, nickname="Star", birth_month=11))
    assert resp.child.nickname == "Star" and resp.child.birth_month == 11
    assert resp.child.birth_year == profile.clock.now.year - 7
    same = await profile.stub.UpdateChild(pb.UpdateChildRequest(
        family_id=fam.family_id, child_id=fam.child_id))
    assert same.child == resp.child
    events = (await profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
        family_id=fam.family_id))).events
    updated = [e for e in events if e.action == "child.updated"]
    assert len(updated) == 1
    assert updated[0].details["fields"] == "birth_month,nickname"
    assert updated[0].actor == "service:tests"  # no acting parent named (older callers)


async def test_update_child_is_audited_as_the_acting_parent(profile):
    fam = await new_family(profile)
    await profile.stub.UpdateChild(pb.UpdateChildRequest(
        family_id=fam.family_id, child_id=fam.child_id, parent_id=fam.parent_id,
        nickname="Star"))
    events = (await profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
        family_id=fam.family_id))).events
    updated = [e for e in events if e.action == "child.updated"]
    assert [e.actor for e in updated] == [f"parent:{fam.parent_id}"]
    # A parent of another family cannot be named (and nothing changes).
    other = await new_family(profile)
    await fails(profile.stub.UpdateChild(pb.UpdateChildRequest(
        family_id=fam.family_id, child_id=fam.child_id, parent_id=other.parent_id,
        nickname="Moon")), C.NOT_FOUND)
    await fails(profile.stub.UpdateChild(pb.UpdateChildRequest(
        family_id=fam.family_id, child_id=fam.child_id, parent_id="nope", nickname="Moon")),
        C.INVALID_ARGUMENT, "parent_id")
    got = (await profile.stub.GetChild(pb.GetChildRequest(
        family_id=fam.family_id, child_id=fam.child_id))).child
    assert got.nickname == "Star"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(nickname=""), "nickname"),
        (dict(nickname="x" * 41), "nickname"),
        (dict(nickname="Mia\u202e"), "nickname"),  # bidi override: spoofs how it reads
        (dict(nickname="\u200b"), "nickname"),  # invisible only
        (dict(birth_month=13), "birth_month"),
        (dict(birth_year=1), "birth_year"),
        (dict(birth_year="next"), "birth_year"),
        (dict(birth_year="old"), "birth_year"),
        (dict(child_id="zzz"), "child_id"),
    ],
)
async def test_update_child_bad_input(profile, changes, field):
    fam = await new_family(profile)
    year = profile.clock.now.year
    if isinstance(changes.get("birth_year"), str):
        changes = {**changes, "birth_year": {"next": year + 1, "old": year - 16}[
            changes["birth_year"]]}
    req = dict(family_id=fam.family_id, child_id=fam.child_id)
    req.update(changes)
    await fails(profile.stub.UpdateChild(pb.UpdateChildRequest(**req)), C.INVALID_ARGUMENT, field)
    got = (await profile.stub.GetChild(pb.GetChildRequest(
        family_id=fam.family_id, child_id=fam.child_id))).child
    assert got.nickname == "Sunny"


async def test_update_child_other_family(profile):
    fam = await new_family(profile)
    other = await new_family(profile)
    await fails(profile.stub.UpdateChild(pb.UpdateChildRequest(
        family_id=other.family_id, child_id=fam.child_id, nickname="X")), C.NOT_FOUND)
