"""Log scan: a full family's life through the public API against the stack as
processes at log level INFO, every service's output captured; no password,
token, pairing code, password hash, email or chat text may appear in any line
at INFO or above (JSON lines by their level; any other line counts as INFO+)."""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from collections.abc import Iterable

import grpc
import pytest
from rich.console import Console

from avatario.common.v1 import family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario_tools.cli.api import Api, ApiError
from avatario_tools.cli.simulate import plan, play
from avatario_tools.devstack.stack import SERVICES, start_stack
from avatario_tools.devstack.supervisor import Supervisor
from tests.e2e.conftest import _launch
from tests.e2e.flows import family_with_child

pytestmark = pytest.mark.slow

BELOW_INFO = {"debug", "notset"}


def _visible_text(line: str) -> str | None:
    """What a line shows at INFO or above (None for a debug JSON line). A JSON
    line's timestamp is left out (its digits are not data)."""
    try:
        event = json.loads(line)
    except ValueError:
        return line
    if not isinstance(event, dict):
        return line
    if str(event.get("level", "info")).lower() in BELOW_INFO:
        return None
    event.pop("timestamp", None)
    return json.dumps(event, ensure_ascii=False)


def find_leaks(lines: Iterable[tuple[str, str]], secrets_: dict[str, str]) -> list[str]:
    """'service: what: line' for every captured INFO+ line that shows a secret."""
    leaks = []
    for service, line in lines:
        text = _visible_text(line)
        if text is None:
            continue
        for what, value in secrets_.items():
            if value and value in text:
                leaks.append(f"{service}: {what}: {line[:300]}")
    return leaks


def test_the_scanner_sees_a_leak_and_ignores_debug():
    s = {"password": "hunter2-hunter2"}
    assert find_leaks([("p", '{"level": "info", "event": "x", "pw": "hunter2-hunter2"}')], s)
    assert find_leaks([("p", "Traceback: hunter2-hunter2 in a plain line")], s)
    assert not find_leaks([("p", '{"level": "debug", "event": "x", "pw": "hunter2-hunter2"}')], s)
    assert not find_leaks([("p", '{"level": "info", "event": "x"}')], s)


def _jwt_parts(token: str) -> dict[str, str]:
    """The whole token and its signature (a leaked signature is a leaked token)."""
    out = {"": token}
    if token.count(".") == 2:
        out[".signature"] = token.rsplit(".", 1)[1]
    return out


async def test_no_secret_or_message_text_in_info_logs(tmp_path, tiny_world_model):
    captured: list[tuple[str, str]] = []
    cfg, _ = _launch("sqlite", tmp_path, tiny_world_model)
    cfg.log_level = "INFO"
    sup = Supervisor(Console(stderr=True, width=200), on_line=lambda n, ln: captured.append((n, ln)))
    tag = secrets.token_hex(4)
    email = f"Scan.Parent+{tag}@Example.org"
    password = f"first-Passw0rd-{tag}"
    new_password = f"second-Passw0rd-{tag}"
    message = f"Quokka{tag} keeps waking at night and cries, what should we try?"
    found: dict[str, str] = {"email": email, "email (lower-case)": email.lower(),
                             "password": password, "new password": new_password,
                             "chat message": message, "argon2 hash": "$argon2"}

    def keep_tokens(api: Api, label: str) -> None:
        for part, value in _jwt_parts(api.parent["access_token"]).items():
            found[f"{label} access token{part}"] = value
        found[f"{label} refresh token"] = api.parent["refresh_token"]

    try:
        await start_stack(cfg, sup)
        async with Api(cfg.target("gateway"), timeout=60) as api:
            _parent, child = await family_with_child(
                api, email, password, "Kiwi", (2018, 5),
                (family_pb2.CONSENT_SCOPE_CHILD_PROFILE, family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT,
                 family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS))
            keep_tokens(api, "sign-up")
            # Refused calls are logged too (rpc.rejected): a taken email, a wrong password.
            async with Api(cfg.target("gateway")) as other:
                with pytest.raises(ApiError):
                    await other.sign_up(email, password, "Again")
            with pytest.raises(ApiError):
                await api.sign_in(email, password + "-wrong")
            await api.sign_in(email, password)
            keep_tokens(api, "sign-in")

            code = (await api.call(api.device.CreatePairingCode,
                                   gw.CreatePairingCodeRequest(child_id=child.child_id))).code
            found["pairing code"] = code
            await api.redeem(code, "Kiwi's tablet")
            found["device token"] = api.device_token(child.child_id)
            with pytest.raises(ApiError):  # a used code
                await api.redeem(code, "again")
            await play(api, child.child_id, plan(child.child_id, 2018, 5, sessions=6, weeks=2,
                                                  weak_domain="ATTENTION", seed=11))
            await api.call(api.report.GetChildReport,
                           gw.GetChildReportRequest(child_id=child.child_id))
            await api.call(api.report.ListFlags, gw.ListFlagsRequest(child_id=child.child_id))

            conv = (await api.call(api.chat.CreateConversation, gw.CreateConversationRequest(
                child_id=child.child_id, title="Nights"))).conversation
            done = await api.ask(conv.conversation_id, message, lambda _: None, max_tokens=24)
            if len(done.text.strip()) >= 12:  # a reply long enough not to match by chance
                found["assistant reply"] = done.text.strip()
            found["safety message"] = f"Pills{tag}: my child swallowed pills, is it dangerous?"
            await api.ask(conv.conversation_id, found["safety message"], lambda _: None)
            await api.call(api.chat.ListMessages, gw.ListMessagesRequest(
                conversation_id=conv.conversation_id, page_size=10))

            refreshed = await api.call(api.auth.RefreshTokens, gw.RefreshTokensRequest(
                refresh_token=api.parent["refresh_token"]))
            for part, value in _jwt_parts(refreshed.tokens.access_token).items():
                found[f"refreshed access token{part}"] = value
            found["refreshed refresh token"] = refreshed.tokens.refresh_token

            await api.call(api.auth.ChangePassword, gw.ChangePasswordRequest(
                current_password=password, new_password=new_password))
            with pytest.raises(ApiError) as ei:  # every sign-in ended
                await api._raw(api.family.GetAccount, gw.GetAccountRequest(),
                               await api.parent_metadata())
            assert ei.value.code == grpc.StatusCode.UNAUTHENTICATED
            await api.sign_in(email, new_password)
            keep_tokens(api, "after password change")

            await api.call(api.privacy.ExportFamilyData, gw.ExportFamilyDataRequest())
            await api.call(api.privacy.EraseFamily, gw.EraseFamilyRequest(password=new_password))
    finally:
        await sup.stop_all()

    by_service: dict[str, int] = defaultdict(int)
    for name, line in captured:
        if _visible_text(line) is not None:
            by_service[name] += 1
    assert set(SERVICES) <= set(by_service), f"every service logged at INFO: {dict(by_service)}"
    leaks = find_leaks(captured, found)
    assert not leaks, "secrets in INFO+ logs:\n" + "\n".join(leaks)
