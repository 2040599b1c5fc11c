"""Domain errors -> google.rpc.Status with canonical codes and standard details.

The one place that knows which status code each error kind (services.common.
errors) is answered with: `STATUS_CODES`, used by the chassis interceptor, and its
inverse `error_for_code`, used where another service's answer is relayed.

Every status carries an ErrorInfo (domain `ERROR_DOMAIN`): the error's `reason`
or its kind's `default_reason`, with the error's metadata.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common import errors

# ErrorInfo.domain of every error this system raises.
ERROR_DOMAIN = "avatario.app"


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


# Error kind -> canonical status code. A kind's subclasses map like the kind.
STATUS_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
}
_KINDS = {code: kind for kind, code in STATUS_CODES.items()}


def status_code(exc: errors.DomainError) -> grpc.StatusCode:
    """The code a domain error is answered with; UNKNOWN for a kind with no code
    (a bare DomainError: a bug, logged as one)."""
    for kind in type(exc).__mro__:
        code = STATUS_CODES.get(kind)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


def error_for_code(code: grpc.StatusCode, message: str) -> errors.DomainError | None:
    """The domain error that answers `code` with `message` and no details (for
    relaying another service's answer); None when no kind has that code."""
    kind = _KINDS.get(code)
    if kind is None:
        return None
    if kind is errors.InvalidArgument:
        return errors.InvalidArgument.unnamed(message)
    if kind is errors.NotFound:
        return errors.NotFound("resource", message)
    return kind(message)


def default_reason(exc: errors.DomainError) -> str:
    """The ErrorInfo reason of an error raised without one: "<RESOURCE>_NOT_FOUND"
    for NOT_FOUND (e.g. CHILD_NOT_FOUND), else the status code's name."""
    if isinstance(exc, errors.NotFound):
        what = re.sub(r"[^A-Z0-9]+", "_", exc.what.upper()).strip("_") or "RESOURCE"
        return f"{what}_NOT_FOUND"
    return status_code(exc).name


def to_rpc_status(exc: errors.DomainError) -> status_pb2.Status:
    code = status_code(exc).value[0]
    status = status_pb2.Status(code=code, message=exc.message)
    metadata = dict(exc.metadata)
    if isinstance(exc, errors.NotFound):
        metadata.setdefault("resource_type", exc.what)
    status.details.append(_pack(error_details_pb2.ErrorInfo(
        reason=exc.reason or default_reason(exc), domain=ERROR_DOMAIN, metadata=metadata)))
    if isinstance(exc, errors.InvalidArgument):
        detail = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                for f, d in exc.violations
            ]
        )
        status.details.append(_pack(detail))
    elif isinstance(exc, errors.ResourceExhausted) and exc.retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, int(exc.retry_after_s * 1000)))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    elif isinstance(exc, errors.FailedPrecondition) and exc.violation_type:
        detail = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=exc.violation_type, subject=exc.subject, description=exc.message
                )
            ]
        )
        status.details.append(_pack(detail))
    elif isinstance(exc, errors.NotFound):
        status.details.append(
            _pack(error_details_pb2.ResourceInfo(resource_type=exc.what, description=exc.message))
        )
    return status


def internal_status(request_id: str) -> status_pb2.Status:
    """What the wire sees for a bug: a generic message and the request id to look up."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error (request id {request_id})"
    )
    status.details.append(_pack(error_details_pb2.ErrorInfo(
        reason=errors.Reason.INTERNAL, domain=ERROR_DOMAIN, metadata={"request_id": request_id})))
    return status


def to_grpc_status(status: status_pb2.Status) -> grpc.Status:
    return rpc_status.to_status(status)


def field_violations(status: status_pb2.Status | None) -> list[tuple[str, str]]:
    """The BadRequest field violations in a status (for clients and tests)."""
    out: list[tuple[str, str]] = []
    if status is None:
        return out
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out


def error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a status, if any (for clients and tests)."""
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def retry_delay_s(status: status_pb2.Status | None) -> float | None:
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    return None
