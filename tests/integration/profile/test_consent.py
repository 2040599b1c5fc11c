"""Consent records: record, re-record, withdraw, list."""

from __future__ import annotations

import grpc
import pytest

from avatario.profile.v1 import profile_pb2 as pb
from services.profile.models import AuditEvent, Consent
from tests.integration.profile.support import (
    ANALYTICS,
    CHAT,
    CHILD,
    count_rows,
    fails,
    new_family,
    new_id,
)

C = grpc.StatusCode


def record(fam, scopes, version="2024-01", **kw):
    base = dict(family_id=fam.family_id, parent_id=fam.parent_id, scopes=scopes,
                policy_version=version)
    base.update(kw)
    return pb.RecordConsentRequest(**base)


async def test_record_is_idempotent_and_a_new_version_supersedes(profile):
    fam = await new_family(profile, scopes=(), child=False)
    first = (await profile.stub.RecordConsent(record(fam, [CHILD, CHAT]))).consents
    assert [c.scope for c in first] == [CHILD, CHAT]
    assert all(c.parent_id == fam.parent_id and c.policy_version == "2024-01" for c in first)
    assert not first[0].HasField("withdrawn_at")
    again = (await profile.stub.RecordConsent(record(fam, [CHILD]))).consents
    assert again[0].consent_id == first[0].consent_id
    newer = (await profile.stub.RecordConsent(record(fam, [CHILD], "2025-02"))).consents
    assert newer[0].consent_id != first[0].consent_id
    active = (await profile.stub.ListConsents(pb.ListConsentsRequest(
        family_id=fam.family_id))).consents
    assert sorted((c.scope, c.policy_version) for c in active) == [
        (CHILD, "2025-02"), (CHAT, "2024-01")]
    every = (await profile.stub.ListConsents(pb.ListConsentsRequest(
        family_id=fam.family_id, include_withdrawn=True))).consents
    old = next(c for c in every if c.consent_id == first[0].consent_id)
    assert old.HasField("withdrawn_at")
    actions = [e.action for e in (await profile.stub.ListAuditEvents(
        pb.ListAuditEventsRequest(family_id=fam.family_id))).events]
    assert actions.count("consent.recorded") == 3


async def test_withdraw(profile):
    fam = await new_family(profile, scopes=(CHILD, ANALYTICS), child=False)
    resp = await profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, scope=ANALYTICS))
    assert resp.consent.scope == ANALYTICS and resp.consent.HasField("withdrawn_at")
    active = (await profile.stub.ListConsents(pb.ListConsentsRequest(
        family_id=fam.family_id))).consents
    assert [c.scope for c in active] == [CHILD]
    # Nothing active any more for that scope.
    await fails(profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id, scope=ANALYTICS)), C.NOT_FOUND)
    events = (await profile.stub.ListAuditEvents(pb.ListAuditEventsRequest(
        family_id=fam.family_id))).events
    assert events[0].action == "consent.withdrawn"
    assert events[0].details["scope"] == "CONSENT_SCOPE_GAMEPLAY_ANALYTICS"


@pytest.mark.parametrize(
    ("scopes", "version", "field"),
    [
        ([], "2024-01", "scopes"),
        ([0], "2024-01", "scopes[0]"),
        ([CHILD, 99], "2024-01", "scopes[1]"),
        ([CHILD, CHILD], "2024-01", "scopes[1]"),
        ([CHILD], "", "policy_version"),
        ([CHILD], "v" * 33, "policy_version"),
        ([CHILD], "v 1", "policy_version"),
        ([CHILD], "v1\n", "policy_version"),
    ],
)
async def test_record_bad_input(profile, scopes, version, field):
    fam = await new_family(profile, scopes=(), child=False)
    await fails(profile.stub.RecordConsent(record(fam, scopes, version)),
                C.INVALID_ARGUMENT, field)
    assert await count_rows(profile, Consent) == 0


async def test_record_unknown_or_foreign_ids(profile):
    fam = await new_family(profile, scopes=(), child=False)
    other = await new_family(profile, scopes=(), child=False)
    await fails(profile.stub.RecordConsent(record(fam, [CHILD], parent_id=other.parent_id)),
                C.NOT_FOUND)
    await fails(profile.stub.RecordConsent(record(fam, [CHILD], family_id=new_id())),
                C.NOT_FOUND)
    await fails(profile.stub.RecordConsent(record(fam, [CHILD], family_id="x")),
                C.INVALID_ARGUMENT, "family_id")
    assert await count_rows(profile, Consent) == 0
    assert await count_rows(profile, AuditEvent, action="consent.recorded") == 0


@pytest.mark.parametrize(
    ("scope", "parent", "field"),
    [(0, True, "scope"), (99, True, "scope"), (CHILD, False, "parent_id")],
)
async def test_withdraw_bad_input(profile, scope, parent, field):
    fam = await new_family(profile, scopes=(CHILD,), child=False)
    await fails(profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=fam.parent_id if parent else "", scope=scope)),
        C.INVALID_ARGUMENT, field)


async def test_withdraw_and_list_scoped(profile):
    fam = await new_family(profile, scopes=(CHILD,), child=False)
    other = await new_family(profile, scopes=(CHILD,), child=False)
    await fails(profile.stub.WithdrawConsent(pb.WithdrawConsentRequest(
        family_id=fam.family_id, parent_id=other.parent_id, scope=CHILD)), C.NOT_FOUND)
    await fails(profile.stub.ListConsents(pb.ListConsentsRequest(family_id=new_id())),
                C.NOT_FOUND)
    await fails(profile.stub.ListConsents(pb.ListConsentsRequest(family_id="")),
                C.INVALID_ARGUMENT, "family_id")
    assert await count_rows(profile, Consent, family_id=other.family_id) == 1
