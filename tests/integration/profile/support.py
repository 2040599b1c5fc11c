"""Helpers for the profile integration tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import func, select

from avatario.common.v1 import family_pb2
from avatario.profile.v1 import profile_pb2 as pb
from tests.helpers import assert_rpc_error

CHILD = family_pb2.CONSENT_SCOPE_CHILD_PROFILE
CHAT = family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT
ANALYTICS = family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS
PASSWORD = "correct horse battery"


@dataclass
class Profile:
    stub: Any
    db: Any
    clock: Any
    port: int
    settings: Any
    server: Any


@dataclass
class Fam:
    family_id: str
    parent_id: str
    email: str
    child_id: str = ""


def new_email() -> str:
    return f"Parent.{uuid.uuid4().hex[:10]}@Example.org"


async def new_family(
    p: Profile, *, scopes: tuple[int, ...] = (CHILD, CHAT), child: bool = True,
) -> Fam:
    email = new_email()
    parent = (await p.stub.CreateParent(pb.CreateParentRequest(
        email=email, password=PASSWORD, display_name="Alex"))).parent
    fam = Fam(parent.family_id, parent.parent_id, email)
    if scopes:
        await p.stub.RecordConsent(pb.RecordConsentRequest(
            family_id=fam.family_id, parent_id=fam.parent_id, scopes=list(scopes),
            policy_version="2024-01"))
    if child:
        if CHILD not in scopes:
            raise ValueError("a child needs the child-profile consent")
        fam.child_id = (await p.stub.CreateChild(pb.CreateChildRequest(
            family_id=fam.family_id, parent_id=fam.parent_id, nickname="Sunny",
            birth_year=p.clock.now.year - 7, birth_month=3))).child.child_id
    return fam


async def fails(call, code: grpc.StatusCode, field: str | None = None) -> grpc.RpcError:
    """Await a call that must fail with `code` (and name `field` if given)."""
    with pytest.raises(grpc.RpcError) as info:
        await call
    assert_rpc_error(info.value, code, field)
    return info.value


def precondition_types(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)
    out = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            pf = error_details_pb2.PreconditionFailure()
            detail.Unpack(pf)
            out.extend(v.type for v in pf.violations)
    return out


async def count_rows(p: Profile, model, **where) -> int:
    stmt = select(func.count()).select_from(model)
    for key, value in where.items():
        stmt = stmt.where(getattr(model, key) == value)
    async with p.db.session() as session:
        return (await session.execute(stmt)).scalar_one()


def new_id() -> str:
    return str(uuid.uuid4())
