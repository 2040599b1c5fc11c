"""The family roles' rules, without a database: who may remove, hand on, erase."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.profile.domain import members, rules

OWNER = SimpleNamespace(id="o", role=members.OWNER)
PARENT = SimpleNamespace(id="p", role=members.PARENT)
OTHER = SimpleNamespace(id="q", role=members.PARENT)


def test_the_owner_removes_others_but_cannot_leave():
    members.check_remove(OWNER, PARENT)
    with pytest.raises(FailedPrecondition) as info:
        members.check_remove(OWNER, OWNER)
    assert info.value.violation_type == members.OWNER_CANNOT_LEAVE


def test_a_parent_may_leave_but_not_remove_anyone():
    members.check_remove(PARENT, PARENT)
    for target in (OWNER, OTHER):
        with pytest.raises(PermissionDenied):
            members.check_remove(PARENT, target)


def test_only_the_owner_hands_on_and_not_to_themselves():
    members.check_transfer(OWNER, PARENT)
    with pytest.raises(PermissionDenied):
        members.check_transfer(PARENT, OTHER)
    with pytest.raises(InvalidArgument) as info:
        members.check_transfer(OWNER, OWNER)
    assert info.value.fields == ["new_owner_parent_id"]
    with pytest.raises(PermissionDenied):
        members.check_owner(PARENT, "erase the family")
    members.check_owner(OWNER, "erase the family")


def test_the_family_size_limit():
    members.check_room(rules.MAX_PARENTS - 1)
    with pytest.raises(FailedPrecondition) as info:
        members.check_room(rules.MAX_PARENTS)
    assert info.value.violation_type == members.FAMILY_FULL
    assert info.value.metadata == {"max_parents": str(rules.MAX_PARENTS)}
