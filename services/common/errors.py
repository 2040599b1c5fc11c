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

Every answer also carries an ErrorInfo (domain "avatario.app") whose `reason` a
client can switch on without parsing messages: the error's own `reason` where the
raiser knows the cause (`Reason` below: refresh the token, sign in again, the
refresh token was reused, rate limited, server busy...), else the kind's default
(`default_reason`, e.g. "CHILD_NOT_FOUND", "INVALID_ARGUMENT"). docs/api.md lists
them. A repeated (field, description) violation is listed once.

`ConfigError` is not answered on the wire: a server refuses to start with it.
"""

from __future__ import annotations

from collections.abc import Iterable


class Reason:
    """ErrorInfo reasons with a defined client reaction (docs/api.md, "Errors")."""

    # UNAUTHENTICATED
    CREDENTIALS_MISSING = "CREDENTIALS_MISSING"  # no or malformed Bearer token: send one
    ACCESS_TOKEN_EXPIRED = "ACCESS_TOKEN_EXPIRED"  # call RefreshToken, then retry the call
    ACCESS_TOKEN_INVALID = "ACCESS_TOKEN_INVALID"  # not a token of ours: sign in again
    SIGN_IN_REVOKED = "SIGN_IN_REVOKED"  # signed out, password changed or revoked: sign in again
    REFRESH_TOKEN_INVALID = "REFRESH_TOKEN_INVALID"  # sign in again
    REFRESH_TOKEN_EXPIRED = "REFRESH_TOKEN_EXPIRED"  # expired or revoked: sign in again
    REFRESH_TOKEN_REUSED = "REFRESH_TOKEN_REUSED"  # used twice: the sign-in is revoked everywhere
    DEVICE_CREDENTIAL_INVALID = "DEVICE_CREDENTIAL_INVALID"  # unknown or revoked device: pair again
    WRONG_CREDENTIALS = "WRONG_CREDENTIALS"  # wrong email or password
    # RESOURCE_EXHAUSTED
    RATE_LIMITED = "RATE_LIMITED"  # over a per-caller limit: wait RetryInfo.retry_delay
    SERVER_BUSY = "SERVER_BUSY"  # the service is at capacity: retry after RetryInfo.retry_delay
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"  # the request is over the size limit: do not retry
    # INTERNAL
    INTERNAL = "INTERNAL"  # a bug: report the request id in ErrorInfo.metadata


class DomainError(Exception):
    """Base class of every error kind; the subclass is the kind.

    `reason` (an ErrorInfo reason, `Reason`) and `metadata` say the specific cause
    when the raiser knows it; without them the kind's default reason is answered.
    """

    def __init__(self, message: str, *, reason: str = "",
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(DomainError):
    """Bad input. Carries one (field path, description) pair per violation."""

    def __init__(self, violations: Iterable[tuple[str, str]], message: str | None = None, *,
                 reason: str = "") -> None:
        # Each (field, description) once, in first-seen order.
        self.violations: list[tuple[str, str]] = list(dict.fromkeys(violations))
        if not self.violations:
            raise ValueError("InvalidArgument needs at least one violation")
        if message is None:
            message = "; ".join(f"{f}: {d}" for f, d in self.violations[:5])
            if len(self.violations) > 5:
                message += f" (and {len(self.violations) - 5} more)"
        super().__init__(message, reason=reason)

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
    def __init__(self, what: str, message: str | None = None, *, reason: str = "") -> None:
        super().__init__(message or f"{what} not found", reason=reason)
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
                 metadata: dict[str, str] | None = None, reason: str = "") -> None:
        super().__init__(message, reason=reason or violation_type, metadata=metadata)
        self.violation_type = violation_type
        self.subject = subject


CONSENT_REQUIRED = "CONSENT_REQUIRED"


def consent_required(scope_name: str) -> FailedPrecondition:
    """The one error for a missing consent: FAILED_PRECONDITION whose ErrorInfo has
    reason CONSENT_REQUIRED and metadata {"scope": <ConsentScope name>}."""
    return FailedPrecondition(
        f"the family has no active consent for {scope_name}",
        violation_type=CONSENT_REQUIRED, subject=scope_name, metadata={"scope": scope_name},
    )


CONVERSATION_TURN_LIMIT = "CONVERSATION_TURN_LIMIT"


def turn_limit_reached(limit: int) -> FailedPrecondition:
    """The one error for a conversation that holds its most turns: FAILED_PRECONDITION
    whose ErrorInfo has reason CONVERSATION_TURN_LIMIT and metadata {"turn_limit": N}."""
    return FailedPrecondition(
        f"this conversation has reached its limit of {limit} turns; start a new conversation",
        violation_type=CONVERSATION_TURN_LIMIT, subject="conversation",
        metadata={"turn_limit": str(limit)})


class PermissionDenied(DomainError):
    pass


class Unauthenticated(DomainError):
    pass


class ResourceExhausted(DomainError):
    """Over a limit; the client may retry after `retry_after_s` (RetryInfo; None: a
    retry cannot help, e.g. MESSAGE_TOO_LARGE, and no RetryInfo is sent)."""

    def __init__(self, message: str, retry_after_s: float | None = 1.0, *, reason: str = "",
                 metadata: dict[str, str] | None = None) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
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
