"""A small async client of the public API, shared by the CLI and the demo:
channels (plaintext or TLS), parent tokens with automatic refresh, device
tokens, child lookup by id or nickname, readable errors."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from grpc_status import rpc_status

from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.gateway.v1 import gateway_pb2_grpc as gw_grpc
from avatario_tools.cli.store import CredentialStore
from services.common.status import field_violations, retry_delay_s

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]
STUBS = {
    "auth": gw_grpc.AuthServiceStub, "family": gw_grpc.FamilyServiceStub,
    "avatar": gw_grpc.AvatarServiceStub, "device": gw_grpc.DeviceServiceStub,
    "play": gw_grpc.PlayServiceStub, "report": gw_grpc.ReportServiceStub,
    "chat": gw_grpc.ChatServiceStub, "privacy": gw_grpc.PrivacyServiceStub,
}


class ApiError(Exception):
    """A failed call, with what a person needs to read."""

    def __init__(self, code: grpc.StatusCode, details: str,
                 fields: list[tuple[str, str]] | None = None, retry_after: float | None = None):
        self.code = code
        self.details = details
        self.fields = fields or []
        self.retry_after = retry_after
        super().__init__(self.describe())

    @classmethod
    def from_rpc(cls, err: grpc.aio.AioRpcError) -> ApiError:
        status = rpc_status.from_call(err)
        return cls(err.code(), err.details() or "", field_violations(status),
                   retry_delay_s(status))

    def describe(self) -> str:
        text = f"{self.code.name}: {self.details}"
        for f, d in self.fields:
            text += f"\n  - {f}: {d}"
        if self.retry_after:
            text += f"\n  (retry in {self.retry_after:.1f}s)"
        return text


class NotSignedIn(Exception):
    pass


def open_channel(target: str, tls_ca: Path | None = None) -> grpc.aio.Channel:
    if tls_ca is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
        return grpc.aio.secure_channel(target, creds, options=CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def _tokens_dict(parent, tokens: gw.AuthTokens, previous: dict | None = None) -> dict[str, Any]:
    out = dict(previous or {})
    if parent is not None:
        out |= {"parent_id": parent.parent_id, "family_id": parent.family_id,
                "email": parent.email, "display_name": parent.display_name}
    return out | {
        "access_token": tokens.access_token,
        "access_expires_at": tokens.access_token_expires_at.ToDatetime(UTC).isoformat(),
        "refresh_token": tokens.refresh_token,
        "refresh_expires_at": tokens.refresh_token_expires_at.ToDatetime(UTC).isoformat(),
    }


class Api:
    def __init__(self, target: str, *, tls_ca: Path | None = None,
                 store: CredentialStore | None = None, timeout: float = 30.0) -> None:
        self.target = target
        self.channel = open_channel(target, tls_ca)
        self.store = store
        self.timeout = timeout
        self._parent = store.parent(target) if store else None
        self._devices: dict[str, dict[str, Any]] = {}
        for name, cls in STUBS.items():
            setattr(self, name, cls(self.channel))

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- parent credentials ------------------------------------------------------------

    @property
    def parent(self) -> dict[str, Any] | None:
        return self._parent

    def forget_parent(self) -> None:
        self._keep_parent(None)

    def _keep_parent(self, value: dict[str, Any] | None) -> None:
        self._parent = value
        if self.store is not None:
            self.store.set_parent(self.target, value)

    async def _raw(self, fn: Callable, request, metadata=(), timeout: float | None = None):
        try:
            return await fn(request, metadata=metadata, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as err:
            raise ApiError.from_rpc(err) from None

    async def sign_up(self, email: str, password: str, display_name: str) -> Any:
        resp = await self._raw(self.auth.SignUp, gw.SignUpRequest(
            email=email, password=password, display_name=display_name))
        self._keep_parent(_tokens_dict(resp.parent, resp.tokens))
        return resp.parent

    async def sign_in(self, email: str, password: str) -> Any:
        resp = await self._raw(self.auth.SignIn, gw.SignInRequest(email=email, password=password))
        self._keep_parent(_tokens_dict(resp.parent, resp.tokens))
        return resp.parent

    async def sign_out(self) -> None:
        if self._parent:
            try:
                await self.call(self.auth.SignOut, gw.SignOutRequest(
                    refresh_token=self._parent["refresh_token"]))
            finally:
                self._keep_parent(None)

    async def _refresh(self) -> None:
        assert self._parent is not None
        try:
            resp = await self._raw(self.auth.RefreshTokens, gw.RefreshTokensRequest(
                refresh_token=self._parent["refresh_token"]))
        except ApiError as err:
            if err.code == grpc.StatusCode.UNAUTHENTICATED:
                self._keep_parent(None)
                raise NotSignedIn("the session has ended; sign in again") from err
            raise
        self._keep_parent(_tokens_dict(None, resp.tokens, self._parent))

    async def parent_metadata(self) -> tuple[tuple[str, str], ...]:
        if not self._parent:
            raise NotSignedIn("not signed in; run `avatario signin` (or `signup`) first")
        expires = datetime.fromisoformat(self._parent["access_expires_at"])
        if expires - datetime.now(UTC) < timedelta(seconds=30):
            await self._refresh()
        return (("authorization", f"Bearer {self._parent['access_token']}"),)

    async def call(self, fn: Callable, request, *, timeout: float | None = None):
        """A unary call as the parent, refreshing the access token when needed."""
        try:
            return await self._raw(fn, request, await self.parent_metadata(), timeout)
        except ApiError as err:
            if err.code != grpc.StatusCode.UNAUTHENTICATED or "expired" not in err.details:
                raise
        await self._refresh()
        return await self._raw(fn, request, await self.parent_metadata(), timeout)

    # -- devices -----------------------------------------------------------------------

    def device_token(self, child_id: str) -> str | None:
        saved = self._devices.get(child_id) or (
            self.store.device(self.target, child_id) if self.store else None)
        return saved["device_token"] if saved else None

    async def pair(self, child_id: str, name: str = "avatario-cli") -> str:
        code = (await self.call(self.device.CreatePairingCode,
                                gw.CreatePairingCodeRequest(child_id=child_id))).code
        return await self.redeem(code, name)

    async def redeem(self, code: str, name: str = "avatario-cli") -> str:
        resp = await self._raw(self.device.PairDevice, gw.PairDeviceRequest(
            code=code, device_name=name))
        saved = {"device_id": resp.device.device_id, "device_token": resp.device_token,
                 "name": resp.device.name}
        self._devices[resp.device.child_id] = saved
        if self.store is not None:
            self.store.set_device(self.target, resp.device.child_id, saved)
        return resp.device.child_id

    async def as_device(self, child_id: str, fn: Callable, request, *, timeout=None):
        token = self.device_token(child_id)
        if token is None:
            raise NotSignedIn("no device is paired for this child here; run `avatario pair`")
        return await self._raw(fn, request, (("authorization", f"Bearer {token}"),), timeout)

    # -- lookups -----------------------------------------------------------------------

    async def children(self) -> list[Any]:
        out, token = [], ""
        while True:
            resp = await self.call(self.family.ListChildren, gw.ListChildrenRequest(
                page_size=200, page_token=token))
            out.extend(resp.children)
            token = resp.next_page_token
            if not token:
                return out

    async def resolve_child(self, ref: str) -> Any:
        """A child by id, or by nickname (case-insensitive) when unambiguous."""
        try:
            uuid.UUID(ref)
        except ValueError:
            matches = [c for c in await self.children() if c.nickname.casefold() == ref.casefold()]
            if len(matches) != 1:
                raise ApiError(grpc.StatusCode.NOT_FOUND,
                               f"no single child called {ref!r}; use the child id") from None
            return matches[0]
        return (await self.call(self.family.GetChild, gw.GetChildRequest(child_id=ref))).child

    # -- chat ------------------------------------------------------------------------------

    async def ask(self, conversation_id: str, message: str, on_text: Callable[[str], None],
                   *, turn_id: str | None = None, max_tokens: int = 0) -> gw.ChatDone:
        from avatario.common.v1 import chat_pb2

        request = gw.ChatRequest(conversation_id=conversation_id, message=message,
                                 turn_id=turn_id or str(uuid.uuid4()),
                                 params=chat_pb2.GenerationParams(max_tokens=max_tokens))
        metadata = await self.parent_metadata()
        call = self.chat.Chat(request, metadata=metadata, timeout=300)
        done = None
        try:
            async for event in call:
                if event.HasField("done"):
                    done = event.done
                else:
                    on_text(event.text)
        except grpc.aio.AioRpcError as err:
            raise ApiError.from_rpc(err) from None
        if done is None:
            raise ApiError(grpc.StatusCode.UNKNOWN, "the reply ended without a final message")
        return done
