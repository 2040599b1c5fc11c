"""Parents: sign-up, authentication, password changes."""

from __future__ import annotations

import grpc
import pytest

from avatario.profile.v1 import profile_pb2 as pb
from services.profile.main import make_servicer
from services.profile.models import AuditEvent, Family, Parent
from tests.integration.profile.conftest import profile_settings
from tests.integration.profile.support import (
    PASSWORD,
    count_rows,
    fails,
    new_email,
    new_family,
    new_id,
)

C = grpc.StatusCode


async def test_create_parent_makes_a_family_with_a_casefolded_email(profile):
    email = new_email()
    resp = await profile.stub.CreateParent(pb.CreateParentRequest(
        email=f"  {email} ", password=PASSWORD, display_name=" Alex "))
    parent = resp.parent
    assert parent.email == email.casefold()
    assert parent.display_name == "Alex"
    assert len(parent.parent_id) == 36 and len(parent.family_id) == 36
    assert parent.created_at.seconds > 0
    got = await profile.stub.GetParent(pb.GetParentRequest(
        family_id=parent.family_id, parent_id=parent.parent_id))
    assert got.parent == parent
    events = (await profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
        family_id=parent.family_id))).events
    assert [e.action for e in events] == ["parent.created"]
    assert events[0].actor == f"parent:{parent.parent_id}"


async def test_duplicate_email_in_other_case_is_already_exists_and_leaves_nothing(profile):
    fam = await new_family(profile, scopes=(), child=False)
    families = await count_rows(profile, Family)
    await fails(profile.stub.CreateParent(pb.CreateParentRequest(
        email=fam.email.upper(), password=PASSWORD, display_name="Sam")), C.ALREADY_EXISTS)
    assert await count_rows(profile, Family) == families
    assert await count_rows(profile, Parent) == 1


@pytest.mark.parametrize(
    ("email", "password", "name", "field"),
    [
        ("", PASSWORD, "Alex", "email"),
        ("not-an-email", PASSWORD, "Alex", "email"),
        ("a@b", PASSWORD, "Alex", "email"),
        ("a b@example.org", PASSWORD, "Alex", "email"),
        ("x" * 250 + "@example.org", PASSWORD, "Alex", "email"),
        ("ok@example.org", "", "Alex", "password"),
        ("ok@example.org", "short", "Alex", "password"),
        ("ok@example.org", "p" * 129, "Alex", "password"),
        ("ok@example.org", " " * 12, "Alex", "password"),
        ("ok@example.org", PASSWORD, "", "display_name"),
        ("ok@example.org", PASSWORD, "   ", "display_name"),
        ("ok@example.org", PASSWORD, "A" * 81, "display_name"),
        ("ok@example.org", PASSWORD, "Al\nex", "display_name"),
    ],
)
async def test_create_parent_bad_input(profile, email, password, name, field):
    await fails(profile.stub.CreateParent(pb.CreateParentRequest(
        email=email, password=password, display_name=name)), C.INVALID_ARGUMENT, field)
    assert await count_rows(profile, Parent) == 0
    assert await count_rows(profile, AuditEvent) == 0


async def test_authenticate_any_case_and_uniform_failures(profile):
    fam = await new_family(profile, scopes=(), child=False)
    ok = await profile.stub.Authenticate(pb.AuthenticateRequest(
        email=fam.email.upper(), password=PASSWORD))
    assert ok.parent.parent_id == fam.parent_id
    wrong = await fails(profile.stub.Authenticate(pb.AuthenticateRequest(
        email=fam.email, password=PASSWORD + "x")), C.UNAUTHENTICATED)
    unknown = await fails(profile.stub.Authenticate(pb.AuthenticateRequest(
        email=new_email(), password=PASSWORD)), C.UNAUTHENTICATED)
    assert wrong.details() == unknown.details()


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [
        ("", PASSWORD, "email"),
        ("nope", PASSWORD, "email"),
        ("ok@example.org", "", "password"),
        ("ok@example.org", "p" * 129, "password"),
    ],
)
async def test_authenticate_bad_input(profile, email, password, field):
    await fails(profile.stub.Authenticate(pb.AuthenticateRequest(
        email=email, password=password)), C.INVALID_ARGUMENT, field)


async def test_authenticate_rehashes_when_parameters_change(profile):
    fam = await new_family(profile, scopes=(), child=False)
    async with profile.db.session() as s:
        before = (await s.get(Parent, fam.parent_id)).password_hash
    # A servicer configured with a higher time cost, on the same database.
    stronger = make_servicer(
        profile_settings(profile.settings.database_url, argon2_time_cost=2), profile.db)
    resp = await stronger.Authenticate(
        pb.AuthenticateRequest(email=fam.email, password=PASSWORD), None)
    assert resp.parent.parent_id == fam.parent_id
    async with profile.db.session() as s:
        after = (await s.get(Parent, fam.parent_id)).password_hash
    assert after != before and "t=2" in after
    # The new hash still verifies through the running server.
    await profile.stub.Authenticate(pb.AuthenticateRequest(email=fam.email, password=PASSWORD))


async def test_get_parent_scoped_to_family(profile):
    a = await new_family(profile, scopes=(), child=False)
    b = await new_family(profile, scopes=(), child=False)
    await fails(profile.stub.GetParent(pb.GetParentRequest(
        family_id=b.family_id, parent_id=a.parent_id)), C.NOT_FOUND)
    await fails(profile.stub.GetParent(pb.GetParentRequest(
        family_id=a.family_id, parent_id=new_id())), C.NOT_FOUND)


@pytest.mark.parametrize(
    ("family_id", "parent_id", "field"),
    [("", "P", "family_id"), ("not-a-uuid", "P", "family_id"), ("F", "", "parent_id"),
     ("F", "123", "parent_id"), ("F", "P".ljust(40, "x"), "parent_id")],
)
async def test_get_parent_bad_input(profile, family_id, parent_id, field):
    fam = await new_family(profile, scopes=(), child=False)
    sub = {"F": fam.family_id, "P": fam.parent_id}
    await fails(profile.stub.GetParent(pb.GetParentRequest(
        family_id=sub.get(family_id, family_id), parent_id=sub.get(parent_id, parent_id))),
        C.INVALID_ARGUMENT, field)


async def test_change_password(profile):
    fam = await new_family(profile, scopes=(), child=False)
    new = "an even better passphrase"
    await profile.stub.ChangePassword(pb.ChangePasswordRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, current_password=PASSWORD,
        new_password=new))
    await fails(profile.stub.Authenticate(pb.AuthenticateRequest(
        email=fam.email, password=PASSWORD)), C.UNAUTHENTICATED)
    await profile.stub.Authenticate(pb.AuthenticateRequest(email=fam.email, password=new))
    events = (await profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
        family_id=fam.family_id))).events
    assert events[0].action == "parent.password_changed"
    assert events[0].target_id == fam.parent_id


async def test_change_password_rejections(profile):
    fam = await new_family(profile, scopes=(), child=False)
    other = await new_family(profile, scopes=(), child=False)

    def req(**kw):
        base = dict(family_id=fam.family_id, parent_id=fam.parent_id,
                    current_password=PASSWORD, new_password="a brand new passphrase")
        base.update(kw)
        return pb.ChangePasswordRequest(**base)

    await fails(profile.stub.ChangePassword(req(current_password="wrong password!")),
                C.PERMISSION_DENIED)
    await fails(profile.stub.ChangePassword(req(new_password="short")),
                C.INVALID_ARGUMENT, "new_password")
    await fails(profile.stub.ChangePassword(req(new_password="x" * 129)),
                C.INVALID_ARGUMENT, "new_password")
    await fails(profile.stub.ChangePassword(req(new_password=PASSWORD)),
                C.INVALID_ARGUMENT, "new_password")
    await fails(profile.stub.ChangePassword(req(current_password="")),
                C.INVALID_ARGUMENT, "current_password")
    await fails(profile.stub.ChangePassword(req(parent_id="nope")),
                C.INVALID_ARGUMENT, "parent_id")
    await fails(profile.stub.ChangePassword(req(family_id=other.family_id)), C.NOT_FOUND)
    # Nothing changed.
    await profile.stub.Authenticate(pb.AuthenticateRequest(email=fam.email, password=PASSWORD))
    events = (await profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
        family_id=fam.family_id))).events
    assert [e.action for e in events] == ["parent.created"]
