"""The authorization matrix: every public RPC x {no token, malformed, forged
signature, expired, other family's parent, child device, revoked device, the
family's second parent (not its owner), a parent removed from the family} ->
the expected status, plus an owner control per RPC. Another family's ids
answer exactly like ids that do not exist (same code, same message)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import grpc
import jwt
import pytest

from avatario.gateway.v1 import gateway_pb2
from services.common.timeutil import utcnow
from services.gateway.auth import POLICY
from tests.integration.gateway.matrix import (
    ADMITTED,
    ANON,
    CASES,
    OWN,
    ROWS,
    Row,
    Victim,
    expected,
)
from tests.integration.gateway.support import (
    KEYS,
    Fam,
    bearer,
    new_family,
    new_id,
    pair_device,
    sign_up,
)

C = grpc.StatusCode
MATRIX_SIZE = (len(ROWS), len(CASES))


def test_the_table_covers_every_public_rpc():
    public = {f"{s.name}.{m.name}" for s in gateway_pb2.DESCRIPTOR.services_by_name.values()
              for m in s.methods}
    assert {r.name for r in ROWS} == public
    assert len(ROWS) == len(public) == len(POLICY)
    assert MATRIX_SIZE == (42, 9)


@dataclass
class World:
    victim: Fam
    attacker: Fam
    ids: Victim
    device_token: str
    revoked_token: str
    forged: str
    expired: str
    second: Fam
    removed_token: str

    def metadata(self, case: str) -> list:
        if case == "no_token":
            return [()]
        if case == "malformed":
            none_alg = jwt.encode({"sub": self.victim.parent.parent_id}, key=None, algorithm="none")
            return [
                (("authorization", "Basic dXNlcjpwYXNzd29yZA=="),),
                (("authorization", "Bearer"),),
                (("authorization", "Bearer not-a-token"),),
                (("authorization", "Bearer a.b.c"),),
                (("authorization", "Bearer " + none_alg),),
                (("authorization", "Bearer dev_short"),),
                (("authorization", "Bearer dev_" + "A" * 300),),
                (("authorization", "Bearer x y"),),
                bearer(self.victim.access) + bearer(self.victim.access),
            ]
        if case == "forged":
            return [bearer(self.forged)]
        if case == "expired":
            return [bearer(self.expired)]
        if case == "other_family_parent":
            return [bearer(self.attacker.access)]
        if case == "child_device":
            return [bearer(self.device_token)]
        if case == "revoked_device":
            return [bearer(self.revoked_token)]
        if case == "second_parent":
            return [bearer(self.second.access)]
        if case == "removed_parent":
            return [bearer(self.removed_token)]
        if case == "owner":
            return [bearer(self.victim.access)]
        raise ValueError(case)


async def join(stack, victim: Fam) -> Fam:
    code = (await victim.client.family.CreateFamilyInvite(
        gateway_pb2.CreateFamilyInviteRequest(), metadata=victim.client.md)).code
    return await sign_up(stack.client, invite_code=code)


async def build_world(stack) -> World:
    victim = await new_family(stack.client)
    attacker = await new_family(stack.client)
    second, third, removed = [await join(stack, victim) for _ in range(3)]
    await victim.client.family.RemoveParent(gateway_pb2.RemoveParentRequest(
        parent_id=removed.parent.parent_id), metadata=victim.client.md)
    code = (await victim.client.family.CreateFamilyInvite(
        gateway_pb2.CreateFamilyInviteRequest(), metadata=victim.client.md)).code
    conv = (await victim.client.chat.CreateConversation(gateway_pb2.CreateConversationRequest(
        child_id=victim.child_id, title="t"), metadata=victim.client.md)).conversation
    device_token, device = await pair_device(victim)
    revoked_token, revoked = await pair_device(victim, name="Old phone")
    await victim.client.device.RevokeDevice(gateway_pb2.RevokeDeviceRequest(
        device_id=revoked.device_id), metadata=victim.client.md)
    now = utcnow()
    claims = {"iss": "avatario-gateway", "aud": "avatario-mobile",
              "sub": victim.parent.parent_id, "fam": victim.family_id, "sid": new_id(),
              "jti": new_id(), "iat": int(now.timestamp()), "nbf": int(now.timestamp()),
              "exp": int((now + timedelta(minutes=10)).timestamp())}
    forged = jwt.encode(claims, "an attacker's guess at the key, 32+ bytes", algorithm="HS256",
                        headers={"kid": "k1"})
    assert KEYS["k1"] not in forged
    expired, _ = stack.gateway.deps.tokens.codec.issue(
        victim.parent.parent_id, victim.family_id, new_id(), now=now - timedelta(hours=1))
    return World(victim, attacker,
                 Victim(victim.child_id, conv.conversation_id, device.device_id,
                        third.parent.parent_id, code),
                 device_token, revoked_token, forged, expired, second, removed.access)


async def invoke(client, row: Row, request, metadata):
    fn = getattr(client.stub(row.service), row.method)
    try:
        if row.streaming:
            return C.OK, "", [m async for m in fn(request, metadata=metadata)]
        return C.OK, "", await fn(request, metadata=metadata)
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details(), None


def check(row: Row, case: str, code, details: str, response, world: World) -> None:
    where = f"{row.name} [{case}] -> {code.name}: {details}"
    assert code not in (C.INTERNAL, C.UNKNOWN), where
    want = ADMITTED if case == "owner" and row.access != ANON else expected(row, case)
    if want == ADMITTED:
        assert code not in (C.UNAUTHENTICATED, C.PERMISSION_DENIED, C.NOT_FOUND), where
    elif want == OWN:
        assert code not in (C.UNAUTHENTICATED, C.PERMISSION_DENIED, C.NOT_FOUND), where
        text = str(response)
        for secret in (world.victim.family_id, world.victim.child_id,
                       world.victim.parent.parent_id, world.victim.email):
            assert secret not in text, f"{where}: leaked the victim's data"
    else:
        assert code == want, where


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
async def test_authorization_matrix(shared_stack, row: Row):
    stack = shared_stack
    world = await build_world(stack)
    for case in CASES:
        # The second parent may change the family (erase a child, leave): a world of its own.
        here = await build_world(stack) if case == "second_parent" else world
        for metadata in here.metadata(case):
            code, details, resp = await invoke(stack.client, row, row.build(here.ids), metadata)
            check(row, case, code, details, resp, here)
            if case == "other_family_parent" and row.scoped:
                # No leak: the victim's ids answer exactly like ids that do not exist.
                nowhere = Victim(new_id(), new_id(), new_id(), new_id())
                code2, details2, _ = await invoke(stack.client, row, row.build(nowhere), metadata)
                assert (code2, details2) == (code, details), row.name
    # Positive control last (it may change the victim's state: erase, sign out).
    for metadata in world.metadata("owner"):
        code, details, resp = await invoke(stack.client, row, row.build(world.ids), metadata)
        check(row, "owner", code, details, resp, world)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_device_names_only_its_own_child(shared_stack):
    stack = shared_stack
    fam = await new_family(stack.client)
    sibling = (await fam.client.family.CreateChild(gateway_pb2.CreateChildRequest(
        nickname="Bo", birth_year=2016, birth_month=1), metadata=fam.client.md)).child.child_id
    other = await new_family(stack.client)
    token, _ = await pair_device(fam)
    for child_id in (sibling, other.child_id, new_id()):
        for row in ROWS:
            if row.access != "parent_or_device" or not row.scoped:
                continue
            code, details, _ = await invoke(
                stack.client, row, row.build(Victim(child_id, new_id(), new_id())), bearer(token))
            assert code == C.PERMISSION_DENIED, f"{row.name}: {code.name} {details}"
