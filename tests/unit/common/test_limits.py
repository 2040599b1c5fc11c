"""The chat message limit is one number: the contract's comments, the gateway's edge check
and the inference node's check (services/common/limits.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.limits import CHAT_MESSAGE_MAX_CHARS
from services.gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parents[3]
REQUIRED = {"internal_token": "t" * 20, "jwt_signing_keys": '{"a": "' + "s" * 32 + '"}',
            "jwt_active_kid": "a"}


def test_the_gateway_allows_at_most_the_contract_limit() -> None:
    assert GatewaySettings(**REQUIRED).chat_message_max_chars == CHAT_MESSAGE_MAX_CHARS
    assert GatewaySettings(**REQUIRED, chat_message_max_chars=500).chat_message_max_chars == 500
    with pytest.raises(ValidationError, match="chat_message_max_chars"):
        GatewaySettings(**REQUIRED, chat_message_max_chars=CHAT_MESSAGE_MAX_CHARS + 1)


@pytest.mark.parametrize("proto", ["gateway/v1/gateway.proto", "inference/v1/inference.proto"])
def test_the_contract_documents_the_same_number(proto: str) -> None:
    text = (ROOT / "protos" / "avatario" / proto).read_text(encoding="utf-8")
    request = re.search(r"message ChatRequest \{(.*?)\n\}", text, re.S)
    assert request is not None
    comment = re.search(r"((?:\s*//[^\n]*)+)\s*string message = 2;", request.group(1))
    assert comment is not None, "ChatRequest.message has no comment"
    assert f"at most {CHAT_MESSAGE_MAX_CHARS} characters" in comment.group(1)
    assert "CHAT_MESSAGE_MAX_CHARS" in comment.group(1)
