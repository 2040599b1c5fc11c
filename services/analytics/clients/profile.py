"""The profile calls analytics makes: consent checks and XP awards.

Each call has a short deadline. Profile's answers that will not change on retry
(the child or family is gone, consent withdrawn, a bad request) make an award
ABANDONED; anything else leaves it PENDING for the outbox (domain/xp.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import structlog

from avatario.common.v1 import family_pb2
from avatario.profile.v1 import profile_pb2, profile_pb2_grpc
from services.analytics.repo.ingest import ABANDONED, DONE, PENDING, Award
from services.common.errors import NotFound, Unavailable, consent_required

log = structlog.get_logger("avatario.analytics.profile")

# Play writes (sessions, check-ins) need this consent, checked with profile on every
# write, not only by the gateway.
PLAY_SCOPE = family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS
# Profile answers that a retry would not change.
_FINAL = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.OUT_OF_RANGE,
})
_MAX_CONSENT_ENTRIES = 10_000


class ProfileClient:
    """The profile calls analytics makes, each with a short deadline.

    `require_consent` asks profile (the owner of consent records) on every play
    write, so a withdrawal stops writes at once. `consent_ttl_s` > 0 lets a
    positive answer be reused that long (an operator's choice of resilience to
    short profile outages over immediacy: a withdrawal then takes effect within
    the TTL); negative answers are never reused.
    """

    def __init__(self, channel: grpc.aio.Channel, deadline_s: float, *,
                 consent_ttl_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.channel = channel
        self.stub = profile_pb2_grpc.ProfileServiceStub(channel)
        self.deadline_s = deadline_s
        self.consent_ttl_s = consent_ttl_s
        self._clock = clock
        self._granted: dict[tuple[str, int], float] = {}

    async def require_play_consent(self, family_id: str) -> None:
        """Play writes (sessions, check-ins) need CONSENT_SCOPE_GAMEPLAY_ANALYTICS."""
        await self.require_consent(family_id, PLAY_SCOPE)

    async def require_consent(self, family_id: str, scope: int) -> None:
        """Return when the family's consent for `scope` is active; else raise
        FAILED_PRECONDITION (ErrorInfo CONSENT_REQUIRED), NOT_FOUND (no such family)
        or UNAVAILABLE (profile cannot say now: the caller retries)."""
        key = (family_id, scope)
        if self.consent_ttl_s > 0 and self._granted.get(key, 0.0) > self._clock():
            return
        try:
            resp = await self.stub.ListConsents(profile_pb2.ListConsentsRequest(
                family_id=family_id), timeout=self.deadline_s, wait_for_ready=False)
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise NotFound("family") from None
            log.warning("profile.consent_unavailable", code=err.code().name)
            raise Unavailable("cannot check the family's consent right now; retry") from None
        if not any(c.scope == scope for c in resp.consents):
            self._granted.pop(key, None)
            raise consent_required(family_pb2.ConsentScope.Name(scope))
        if self.consent_ttl_s > 0:
            self._granted[key] = self._clock() + self.consent_ttl_s
            if len(self._granted) > _MAX_CONSENT_ENTRIES:
                self._granted.pop(next(iter(self._granted)))

    async def award_xp(self, award: Award) -> tuple[str, str]:
        """(status, error): DONE, PENDING (retry later) or ABANDONED."""
        try:
            await self.stub.AwardXp(profile_pb2.AwardXpRequest(
                family_id=award.family_id, child_id=award.child_id, amount=award.amount,
                source_id=award.source_id, reason=award.reason,
            ), timeout=self.deadline_s, wait_for_ready=False)
        except grpc.aio.AioRpcError as err:
            status = ABANDONED if err.code() in _FINAL else PENDING
            return status, f"{err.code().name}: {err.details() or ''}"
        return DONE, ""
