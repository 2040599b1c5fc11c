"""Domain errors: raised by domain code, mapped to gRPC status codes in one place.

Domain modules raise these; the chassis error interceptor turns them into a
`google.rpc.Status` with the right canonical code and details. Anything else
that escapes a handler is a bug and becomes INTERNAL with a generic message.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc


class DomainError(Exception):
    """Base class. `code` is the canonical status code it maps to."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """Bad input. Carries one (field path, description) pair per violation."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[tuple[str, str]], message: str | None = None) -> None:
        self.violations: list[tuple[str, str]] = list(violations)
        if not self.violations:
            raise ValueError("InvalidArgument needs at least one violation")
        if message is None:
            message = "; ".join(f"{f}: {d}" for f, d in self.violations[:5])
            if len(self.violations) > 5:
                message += f" (and {len(self.violations) - 5} more)"
        super().__init__(message)

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        return cls([(field, description)])

    @property
    def fields(self) -> list[str]:
        return [f for f, _ in self.violations]


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, what: str, message: str | None = None) -> None:
        super().__init__(message or f"{what} not found")
        self.what = what


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DomainError):
    """The system is not in a state the call needs (e.g. consent missing).

    `violation_type` and `subject` end up in a PreconditionFailure detail and, with
    `metadata`, in an ErrorInfo detail (reason = violation_type) that clients can
    switch on without parsing messages.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, *, violation_type: str = "", subject: str = "",
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.violation_type = violation_type
        self.subject = subject
        self.metadata = dict(metadata or {})


CONSENT_REQUIRED = "CONSENT_REQUIRED"


def consent_required(scope_name: str) -> FailedPrecondition:
    """The one error for a missing consent: FAILED_PRECONDITION whose ErrorInfo has
    reason CONSENT_REQUIRED and metadata {"scope": <ConsentScope name>}."""
    return FailedPrecondition(
        f"the family has no active consent for {scope_name}",
        violation_type=CONSENT_REQUIRED, subject=scope_name, metadata={"scope": scope_name},
    )


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(DomainError):
    """Over a limit; the client may retry after `retry_after_s` (RetryInfo)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Aborted(DomainError):
    """A concurrency conflict the caller may retry (e.g. a serialization failure)."""

    code = grpc.StatusCode.ABORTED
