"""Every domain error answers with an ErrorInfo reason (issue 17); violations are
listed once; an oversized message carries no RetryInfo."""

from __future__ import annotations

import pytest

from services.common import errors
from services.common.status import (
    ERROR_DOMAIN,
    STATUS_CODES,
    default_reason,
    error_info,
    field_violations,
    internal_status,
    retry_delay_s,
    to_rpc_status,
)


def _one(kind: type[errors.DomainError]) -> errors.DomainError:
    if kind is errors.InvalidArgument:
        return errors.InvalidArgument.field("child_id", "is required")
    if kind is errors.NotFound:
        return errors.NotFound("child")
    return kind("something")


@pytest.mark.parametrize("kind", list(STATUS_CODES))
def test_every_kind_answers_with_an_error_info(kind):
    exc = _one(kind)
    info = error_info(to_rpc_status(exc))
    assert info is not None and info.domain == ERROR_DOMAIN and info.reason == default_reason(exc)
    assert info.reason.isupper() and " " not in info.reason


def test_default_and_specific_reasons():
    assert default_reason(errors.NotFound("child")) == "CHILD_NOT_FOUND"
    assert default_reason(errors.NotFound("avatar item")) == "AVATAR_ITEM_NOT_FOUND"
    info = error_info(to_rpc_status(errors.NotFound("child")))
    assert info.metadata["resource_type"] == "child"
    exc = errors.Unauthenticated("access token expired", reason=errors.Reason.ACCESS_TOKEN_EXPIRED)
    assert error_info(to_rpc_status(exc)).reason == "ACCESS_TOKEN_EXPIRED"
    consent = errors.consent_required("CONSENT_SCOPE_GAMEPLAY_ANALYTICS")
    info = error_info(to_rpc_status(consent))
    assert info.reason == "CONSENT_REQUIRED" and info.metadata["scope"] == "CONSENT_SCOPE_GAMEPLAY_ANALYTICS"
    assert sum(1 for d in to_rpc_status(consent).details if d.TypeName().endswith("ErrorInfo")) == 1


def test_rate_limit_and_message_too_large_differ():
    limited = to_rpc_status(errors.ResourceExhausted("too many", retry_after_s=2.0,
                                                     reason=errors.Reason.RATE_LIMITED))
    assert error_info(limited).reason == "RATE_LIMITED" and retry_delay_s(limited) == 2.0
    big = to_rpc_status(errors.ResourceExhausted("too big", retry_after_s=None,
                                                 reason=errors.Reason.MESSAGE_TOO_LARGE,
                                                 metadata={"max_bytes": "1024"}))
    assert error_info(big).reason == "MESSAGE_TOO_LARGE" and retry_delay_s(big) is None
    assert error_info(big).metadata["max_bytes"] == "1024"


def test_a_repeated_violation_is_listed_once():
    exc = errors.InvalidArgument([("nickname", "is required"), ("birth_month", "must be 1-12"),
                                  ("nickname", "is required")])
    assert exc.violations == [("nickname", "is required"), ("birth_month", "must be 1-12")]
    assert field_violations(to_rpc_status(exc)) == exc.violations
    assert exc.message.count("nickname") == 1


def test_internal_errors_carry_the_request_id():
    info = error_info(internal_status("req-1"))
    assert info.reason == "INTERNAL" and info.metadata["request_id"] == "req-1"
