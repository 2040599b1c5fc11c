"""Helpers for the gateway integration tests: settings, a public-API client, families."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from avatario.common.v1 import family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.gateway.v1 import gateway_pb2_grpc as gw_grpc
from avatario_tools.cli.simulate import plan
from services.gateway.settings import GatewaySettings
from tests.helpers import INTERNAL_TOKEN, assert_rpc_error

KEYS = {"k1": "k1-secret-0123456789-0123456789-0123", "k2": "k2-secret-abcdefghij-abcdefghij-abcd"}
PASSWORD = "correct horse battery"
CHILD = family_pb2.CONSENT_SCOPE_CHILD_PROFILE
ANALYTICS = family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS
CHAT = family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT
ALL_SCOPES = (CHILD, ANALYTICS, CHAT)
DEAD_TARGET = "127.0.0.1:9"  # discard port: nothing listens, connections are refused

STUBS = {
    "AuthService": gw_grpc.AuthServiceStub, "FamilyService": gw_grpc.FamilyServiceStub,
    "AvatarService": gw_grpc.AvatarServiceStub, "DeviceService": gw_grpc.DeviceServiceStub,
    "PlayService": gw_grpc.PlayServiceStub, "ReportService": gw_grpc.ReportServiceStub,
    "ChatService": gw_grpc.ChatServiceStub, "PrivacyService": gw_grpc.PrivacyServiceStub,
}


def gateway_settings(db_url: str, *, profile: str, analytics: str = DEAD_TARGET,
                     inference: str = DEAD_TARGET, keys: dict[str, str] | None = None,
                     active_kid: str = "k1", **overrides) -> GatewaySettings:
    values: dict[str, Any] = dict(
        internal_token=INTERNAL_TOKEN, host="127.0.0.1", port=0, metrics_port=None,
        database_url=db_url, profile_target=profile, analytics_target=analytics,
        inference_target=inference, jwt_signing_keys=json.dumps(keys or KEYS),
        jwt_active_kid=active_kid, log_json=False,
        # Generous limits: tests that exercise a limit lower it themselves.
        rate_limit_rps=1000, rate_limit_burst=1000, auth_rate_limit_rps=1000,
        auth_rate_limit_burst=1000, anonymous_rate_limit_rps=1000,
        anonymous_rate_limit_burst=1000, password_rate_limit="1000/second",
        backend_deadline_s=5.0,
        chat_first_chunk_timeout_s=10.0, revocation_refresh_s=0.2,
    )
    values.update(overrides)
    return GatewaySettings(**values)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Client:
    """Stubs for every public service over one channel; `as_(token)` sets the credential."""

    def __init__(self, channel: grpc.aio.Channel, token: str | None = None) -> None:
        self.channel = channel
        self.token = token
        for name, cls in STUBS.items():
            setattr(self, name.removesuffix("Service").lower(), cls(channel))

    def as_(self, token: str | None) -> Client:
        return Client(self.channel, token)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token) if self.token else ()

    def stub(self, service: str):
        return STUBS[service](self.channel)

    async def call(self, service: str, method: str, request, **kw):
        fn = getattr(self.stub(service), method)
        return await fn(request, metadata=kw.pop("metadata", self.md), **kw)


@dataclass
class Fam:
    email: str
    parent: Any
    tokens: Any
    client: Client
    child_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def access(self) -> str:
        return self.tokens.access_token

    @property
    def family_id(self) -> str:
        return self.parent.family_id


def new_email() -> str:
    return f"parent.{uuid.uuid4().hex[:10]}@example.org"


async def sign_up(client: Client, email: str | None = None, invite_code: str = "") -> Fam:
    email = email or new_email()
    resp = await client.auth.SignUp(gw.SignUpRequest(
        email=email, password=PASSWORD, display_name="Alex", invite_code=invite_code))
    return Fam(email, resp.parent, resp.tokens, client.as_(resp.tokens.access_token))


async def new_family(client: Client, *, scopes=ALL_SCOPES, child: bool = True,
                     birth_year: int = 2018) -> Fam:
    fam = await sign_up(client)
    if scopes:
        await fam.client.family.RecordConsent(gw.RecordConsentRequest(
            scopes=list(scopes), policy_version="2024-01"), metadata=fam.client.md)
    if child:
        fam.child_id = (await fam.client.family.CreateChild(gw.CreateChildRequest(
            nickname="Sunny", birth_year=birth_year, birth_month=3),
            metadata=fam.client.md)).child.child_id
    return fam


async def pair_device(fam: Fam, child_id: str | None = None, name: str = "Tablet") -> tuple[str, Any]:
    code = (await fam.client.device.CreatePairingCode(gw.CreatePairingCodeRequest(
        child_id=child_id or fam.child_id), metadata=fam.client.md)).code
    resp = await fam.client.device.PairDevice(gw.PairDeviceRequest(code=code, device_name=name))
    return resp.device_token, resp.device


async def fails(call, code: grpc.StatusCode, field: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        await call
    assert_rpc_error(info.value, code, field)
    return info.value


def new_id() -> str:
    return str(uuid.uuid4())


async def collect(call) -> tuple[list[str], gw.ChatDone | None]:
    """A public Chat stream read to its end: the text chunks and the ChatDone (if any)."""
    texts, done = [], None
    while (event := await call.read()) is not grpc.aio.EOF:
        if event.HasField("done"):
            done = event.done
        else:
            texts.append(event.text)
    return texts, done


def plan_with_checkins(child_id: str, checkins: int, *, sessions: int, seed: int,
                       weeks: int = 1):
    """`weeks` of play with `sessions` sessions and at least `checkins` mood check-ins. The
    simulator draws check-ins on 40-90 % of days from a seed that includes the (random) child
    id, so one seed alone gives too few now and then; the next seeds are tried in order."""
    for attempt in range(50):
        p = plan(child_id, 2018, 3, sessions=sessions, weeks=weeks, seed=seed + 1000 * attempt)
        if len(p.checkins) >= checkins and len(p.sessions) >= sessions:
            return p
    raise AssertionError(f"no plan with {checkins} check-ins in 50 seeds")
