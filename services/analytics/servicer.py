"""AnalyticsService: protobuf in, validation, domain use cases, protobuf out.

Decisions visible to callers:
* ListGames lists every (game, version) of the catalog in catalog order; the
  mood check-in is not a game (it has no trials) and is submitted with
  SubmitMoodCheckIn, so it is not listed.
* GetChildReport leaves ChildReport.avatar unset: the gateway, which has just
  fetched the child from profile, fills it (analytics does not call back into
  profile for a read).
* A child id analytics knows under another family is NOT_FOUND on every call.
  A child analytics has never seen gets an empty report ("not enough data").
* SubmitGameSession and SubmitMoodCheckIn need the family's active
  CONSENT_SCOPE_GAMEPLAY_ANALYTICS (domain/submissions.py). Stored data stays
  readable (reports, export) until it is erased.
* SubmitGameSession answers xp_pending=true while profile has not taken the
  award; the outbox retries it. A retry of the submission tries again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import structlog

from avatario.analytics.v1 import analytics_pb2 as pb
from avatario.analytics.v1 import analytics_pb2_grpc as pb_grpc
from services.analytics import convert, hashing, validate
from services.analytics.domain import exporting
from services.analytics.domain.catalog import Catalog, validate_mood_checkin, validate_session
from services.analytics.domain.flags import DEFAULT_FLAG_POLICY, FlagPolicy
from services.analytics.domain.norms_keeper import Norms
from services.analytics.domain.reporting import Reporter
from services.analytics.domain.submissions import ConsentCheck, Submissions
from services.analytics.domain.tips import TipLibrary
from services.analytics.domain.types import LEVEL_RANK, Flag, FlagKind, Mood, Session
from services.analytics.domain.xapi import Actor, child_statements, pseudonymous_id
from services.analytics.domain.xp import XpOutbox
from services.analytics.metrics import AnalyticsMetrics
from services.analytics.repo import erase, ingest, reads
from services.common.chunking import batches
from services.common.db import Database, in_transaction, read
from services.common.errors import InvalidArgument
from services.common.pagination import PageRequest, cursor_value, encode_token, parse_page
from services.common.timeutil import utcnow
from services.common.validation import Violations

log = structlog.get_logger("avatario.analytics")

def _page(items: list, page: PageRequest, start: int, cursor_of: Callable) -> tuple[list, str]:
    chunk = items[start:start + page.size]
    more = start + page.size < len(items)
    return chunk, encode_token(cursor_of(chunk[-1])) if more and chunk else ""


def _bad_token() -> InvalidArgument:
    return InvalidArgument.field("page_token", "is not a valid page token")


_KIND_RANK = {k: i for i, k in enumerate(FlagKind)}


def _flag_key(f: Flag) -> tuple[int, int, str]:
    """ListFlags order (most serious first) and its page cursor."""
    return LEVEL_RANK[f.level], _KIND_RANK[f.kind], f.domain.value


class AnalyticsServicer(pb_grpc.AnalyticsServiceServicer):
    def __init__(
        self, db: Database, *, catalog: Catalog, tips: TipLibrary, norms: Norms,
        profile: ConsentCheck, outbox: XpOutbox, xapi_key: bytes, xapi_home_page: str,
        metrics: AnalyticsMetrics, clock: Callable[[], datetime] = utcnow,
        flag_policy: FlagPolicy = DEFAULT_FLAG_POLICY,
    ) -> None:
        self.db = db
        self.catalog = catalog
        self.tips = tips
        self.norms = norms
        self.outbox = outbox
        self.xapi_key = xapi_key
        self.xapi_home_page = xapi_home_page
        self.metrics = metrics
        self.clock = clock
        self.reporter = Reporter(db, catalog, tips, norms, flag_policy)
        self.submissions = Submissions(db, catalog=catalog, norms=norms, consent=profile,
                                       outbox=outbox, metrics=metrics)

    # -- catalog -------------------------------------------------------------------

    async def ListGames(self, request: pb.ListGamesRequest, context):
        page = parse_page(request.page_size, request.page_token)
        games = list(self.catalog.games)
        start = 0
        if page.cursor is not None:
            key = (cursor_value(page, "g", str), cursor_value(page, "v", int))
            keys = [g.key for g in games]
            if key not in keys:
                raise _bad_token()
            start = keys.index(key) + 1
        chunk, token = _page(games, page, start, lambda g: {"g": g.game_id, "v": g.version})
        return pb.ListGamesResponse(games=[convert.game_pb(g) for g in chunk],
                                    next_page_token=token)

    async def ListTips(self, request: pb.ListTipsRequest, context):
        domain = convert.domain_from_pb(request.domain)
        validate.tips_filter(request, domain is not None)
        page = parse_page(request.page_size, request.page_token)
        tips = self.tips.list(domain, request.age_band or None)
        start = 0
        if page.cursor is not None:
            after = cursor_value(page, "t", str)
            start = sum(1 for t in tips if t.tip_id <= after)
        chunk, token = _page(tips, page, start, lambda t: {"t": t.tip_id})
        return pb.ListTipsResponse(tips=[convert.tip_pb(t) for t in chunk], next_page_token=token)

    # -- ingestion -----------------------------------------------------------------

    async def SubmitGameSession(self, request: pb.SubmitGameSessionRequest, context):
        now = self.clock()
        ref_pb, s = request.child, request.session
        raw = convert.session_from_pb(s, ref_pb.child_id)
        ref = validate.submitted(ref_pb, s.session_id, s.child_id, item="session",
                                 id_field="session_id", now=now,
                                 domain_check=lambda: validate_session(raw, self.catalog, now))
        done = await self.submissions.session(
            ref, raw, content_hash=hashing.session_hash(ref.family_id, ref.child_id, s), now=now)
        return pb.SubmitGameSessionResponse(
            result=convert.result_pb(done.stored.result, xp_pending=done.xp_pending,
                                     received_at=done.stored.received_at),
            duplicate=done.stored.duplicate)

    async def SubmitMoodCheckIn(self, request: pb.SubmitMoodCheckInRequest, context):
        now = self.clock()
        ref_pb, c = request.child, request.checkin
        checkin = convert.checkin_from_pb(c, ref_pb.child_id)
        ref = validate.submitted(
            ref_pb, c.checkin_id, c.child_id, item="checkin", id_field="checkin_id", now=now,
            domain_check=lambda: validate_mood_checkin(checkin, self.catalog, now))
        stored = await self.submissions.checkin(
            ref, replace(checkin, mood=Mood(checkin.mood)),
            content_hash=hashing.checkin_hash(ref.family_id, ref.child_id, c), now=now)
        return pb.SubmitMoodCheckInResponse(checkin=convert.checkin_pb(stored.checkin),
                                            duplicate=stored.duplicate, xp_awarded=stored.xp_awarded,
                                            xp_pending=stored.xp_pending)

    # -- reports -------------------------------------------------------------------

    async def GetChildReport(self, request: pb.GetChildReportRequest, context):
        now = self.clock()
        ref = validate.child_ref(request.child, now)
        as_of = validate.as_of(request, now)
        evaluated = await self.reporter.evaluate(ref, as_of, now)
        return pb.GetChildReportResponse(report=convert.report_pb(evaluated.report))

    async def ListFlags(self, request: pb.ListFlagsRequest, context):
        now = self.clock()
        ref = validate.child_ref(request.child, now)
        page = parse_page(request.page_size, request.page_token)
        flags = sorted((await self.reporter.evaluate(ref, now, now)).report.flags, key=_flag_key)
        start = 0
        if page.cursor is not None:
            key = (cursor_value(page, "l", int), cursor_value(page, "k", int),
                   cursor_value(page, "d", str))
            start = sum(1 for f in flags if _flag_key(f) <= key)
        chunk, token = _page(flags, page, start, lambda f: dict(zip(
            "lkd", _flag_key(f), strict=True)))
        return pb.ListFlagsResponse(flags=[convert.flag_pb(f) for f in chunk],
                                    next_page_token=token)

    async def GetChildSummary(self, request: pb.GetChildSummaryRequest, context):
        now = self.clock()
        ref = validate.child_ref(request.child, now)
        evaluated = await self.reporter.evaluate(ref, now, now)
        return pb.GetChildSummaryResponse(summary=convert.summary_pb(evaluated.report.summary))

    # -- export and erasure ----------------------------------------------------------

    async def ExportChildData(self, request: pb.ExportChildDataRequest, context):
        now = self.clock()
        ref = validate.child_ref(request.child, now)

        async def gather(s):
            if await ingest.child_row(s, ref.family_id, ref.child_id) is None:
                return [], [], []
            return (await reads.raw_sessions(s, ref.child_id),
                    [x.result for x in await reads.scored_sessions(s, ref.child_id)],
                    await reads.checkins_between(s, ref.child_id))

        raw, results, checkins = await read(self.db, gather)
        flags = (await self.reporter.evaluate(ref, now, now)).report.flags
        actor = Actor(self.xapi_home_page, pseudonymous_id(ref.child_id, self.xapi_key))
        statements = child_statements(results, checkins, self.catalog, actor)
        sessions = [convert.session_pb(Session(
            r.row.session_id, r.row.child_id, r.row.game_id, r.row.game_version,
            r.row.started_at, r.row.ended_at, r.trials)) for r in raw]
        received = {r.row.session_id: r.row.received_at for r in raw}
        return pb.ExportChildDataResponse(export=pb.ChildDataExport(
            child_id=ref.child_id, sessions=sessions,
            results=[convert.result_pb(r, received_at=received.get(r.session_id))
                     for r in results],
            mood_checkins=[convert.checkin_pb(c) for c in checkins],
            flags=[convert.flag_pb(f) for f in flags],
            statements=convert.statements_pb(statements)))

    async def StreamChildExport(self, request: pb.StreamChildExportRequest, context):
        now = self.clock()
        ref = validate.child_ref(request.child, now)
        actor = Actor(self.xapi_home_page, pseudonymous_id(ref.child_id, self.xapi_key))

        async def flags():
            return (await self.reporter.evaluate(ref, now, now)).report.flags

        found = exporting.records(
            self.db, exporting.ChildKey(ref.family_id, ref.child_id), catalog=self.catalog,
            actor=actor, flags=flags)
        records = (convert.export_record(ref.child_id, kind, rec) async for kind, rec in found)
        async for batch in batches(records):
            yield pb.StreamChildExportResponse(records=batch)

    async def EraseChildData(self, request: pb.EraseChildDataRequest, context):
        ref = validate.child_ref(request.child, self.clock())

        async def work(s):
            await ingest.child_row(s, ref.family_id, ref.child_id, for_update=True)
            return await erase.erase_child(s, ref.child_id)

        counts = await in_transaction(self.db, work)
        log.info("analytics.child_erased", rows=sum(counts.values()))
        return pb.EraseChildDataResponse(deleted_rows=counts)

    async def EraseFamilyData(self, request: pb.EraseFamilyDataRequest, context):
        v = Violations()
        v.uuid("family_id", request.family_id)
        v.raise_if_any()
        counts = await in_transaction(self.db, lambda s: erase.erase_family(
            s, request.family_id))
        log.info("analytics.family_erased", rows=sum(counts.values()))
        return pb.EraseFamilyDataResponse(deleted_rows=counts)
