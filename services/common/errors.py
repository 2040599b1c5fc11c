"""Domain errors: raised by domain code, mapped to gRPC status codes in one place.

Domain modules raise these; the exception class is the error's kind. The
chassis (services.common.status, used by the error interceptor) maps each kind
to its canonical status code and details; this module knows nothing of gRPC,
so domain code that raises these imports no transport. Anything else that
escapes a handler is a bug and becomes INTERNAL with a generic message.

| kind                 | status code          | details                                |
|----------------------|----------------------|----------------------------------------|
| InvalidArgument      | INVALID_ARGUMENT     | BadRequest.field_violations            |
| NotFound             | NOT_FOUND            | ResourceInfo (resource_type)           |
| AlreadyExists        | ALREADY_EXISTS       |                                        |
| FailedPrecondition   | FAILED_PRECONDITION  | PreconditionFailure + ErrorInfo (typed)|
| PermissionDenied     | PERMISSION_DENIED    |                                        |
| Unauthenticated      | UNAUTHENTICATED      |                                        |
| ResourceExhausted    | RESOURCE_EXHAUSTED   | RetryInfo                              |
| Unavailable          | UNAVAILABLE          |                                        |
| DeadlineExceeded     | DEADLINE_EXCEEDED    |                                        |
| Aborted              | ABORTED              |                                        |
| OutOfRange           | OUT_OF_RANGE         |                                        |

`ConfigError` is not answered on the wire: a server refuses to start with it.
"""

from __future__ import annotations

from collections.abc import Iterable


class DomainError(Exception):
    """Base class of every error kind; the subclass is the kind."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """Bad input. Carries one (field path, description) pair per violation."""

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

    @classmethod
    def unnamed(cls, message: str) -> InvalidArgument:
        """Bad input whose field is not known here: only for relaying another
        service's INVALID_ARGUMENT that named none. Domain code names the field."""
        exc = cls.__new__(cls)
        exc.violations = []
        DomainError.__init__(exc, message)
        return exc

    @property
    def fields(self) -> list[str]:
        return [f for f, _ in self.violations]


class NotFound(DomainError):
    def __init__(self, what: str, message: str | None = None) -> None:
        super().__init__(message or f"{what} not found")
        self.what = what


class AlreadyExists(DomainError):
    pass


class FailedPrecondition(DomainError):
    """The system is not in a state the call needs (e.g. consent missing).

    `violation_type` and `subject` end up in a PreconditionFailure detail and, with
    `metadata`, in an ErrorInfo detail (reason = violation_type) that clients can
    switch on without parsing messages.
    """

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
    pass


class Unauthenticated(DomainError):
    pass


class ResourceExhausted(DomainError):
    """Over a limit; the client may retry after `retry_after_s` (RetryInfo)."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(DomainError):
    pass


class DeadlineExceeded(DomainError):
    pass


class Aborted(DomainError):
    """A concurrency conflict the caller may retry (e.g. a serialization failure)."""


class OutOfRange(DomainError):
    """A value past the valid range of an iteration or position (e.g. a page past the end)."""


class ConfigError(ValueError):
    """A start-up configuration a server refuses to run with (never answered on the wire)."""
