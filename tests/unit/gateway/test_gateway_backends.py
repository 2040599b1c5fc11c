"""What the public API answers for a failed backend call, and the deadline a
backend call gets."""

from __future__ import annotations

import contextvars
import time

import grpc
import pytest

from services.common import errors, interceptors
from services.common.status import status_code
from services.gateway.clients.backends import call_timeout, translate


def _err(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_a_backend_deadline_reaches_the_client_as_deadline_exceeded():
    out = translate("profile", _err(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    assert isinstance(out, errors.DeadlineExceeded)
    assert status_code(out) is grpc.StatusCode.DEADLINE_EXCEEDED and "profile" in out.message


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED])
def test_a_down_backend_is_unavailable(code):
    out = translate("analytics", _err(code))
    assert isinstance(out, errors.Unavailable)


def _in_call(remaining: float | None, fn):
    """Run fn as if handling a call with `remaining` seconds left."""
    ctx = contextvars.copy_context()
    deadline = None if remaining is None else time.monotonic() + remaining
    ctx.run(interceptors._call_deadline.set, deadline)
    return ctx.run(fn)


def test_backend_calls_get_what_is_left_of_the_clients_deadline():
    assert _in_call(None, lambda: call_timeout(5.0)) == 5.0
    assert _in_call(30.0, lambda: call_timeout(5.0)) == 5.0
    assert 0 < _in_call(0.4, lambda: call_timeout(5.0)) <= 0.4
    with pytest.raises(errors.DeadlineExceeded):
        _in_call(-0.1, lambda: call_timeout(5.0))


def test_work_outside_the_call_has_no_deadline():
    def detached():
        return interceptors.outside_call().run(interceptors.call_time_remaining)

    assert _in_call(0.4, detached) is None
    assert _in_call(0.4, interceptors.call_time_remaining) <= 0.4


@pytest.mark.parametrize("code", [
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.INVALID_ARGUMENT,
])
def test_a_backend_client_error_passes_through_with_its_code_and_message(code):
    out = translate("profile", _err(code, "as the backend said"))
    assert isinstance(out, errors.DomainError)
    assert status_code(out) is code and out.message == "as the backend said"


def test_a_backend_bug_is_not_passed_through():
    from services.gateway.clients.backends import BackendFailure

    assert isinstance(translate("profile", _err(grpc.StatusCode.INTERNAL, "boom")), BackendFailure)
