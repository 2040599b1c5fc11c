"""Protobuf <-> analytics domain types (the only module that knows both).

Enum values of the domain are the proto enum names without their prefix
(`SkillDomain.ATTENTION` <-> `SKILL_DOMAIN_ATTENTION`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2

from avatario.analytics.v1 import analytics_pb2
from avatario.common.v1 import play_pb2, report_pb2
from services.analytics.domain.catalog import FieldSpec, GameSpec, correct_rule_text
from services.analytics.domain.report import ChildReport, ChildSummary
from services.analytics.domain.scoring import AreaScore, DomainScore, PlayTime, TrendPoint
from services.analytics.domain.types import (
    Flag,
    FlagEvidence,
    MetricValue,
    MoodCheckIn,
    NormStrength,
    Session,
    SessionResult,
    SkillDomain,
    Tip,
    Trial,
)
from services.common.timeutil import from_ts, to_ts

# -- enums -----------------------------------------------------------------------------


def _enum_pb(enum, prefix: str, value: str) -> int:
    return enum.Value(prefix + value)


def domain_pb(domain: SkillDomain) -> int:
    return _enum_pb(play_pb2.SkillDomain, "SKILL_DOMAIN_", domain.value)


def domain_from_pb(value: int) -> SkillDomain | None:
    """The domain of a known, non-zero enum number; None otherwise."""
    try:
        name = play_pb2.SkillDomain.Name(value)
    except ValueError:
        return None
    d = SkillDomain(name.removeprefix("SKILL_DOMAIN_"))
    return None if d == SkillDomain.UNSPECIFIED else d


def mood_name_from_pb(value: int) -> str:
    """The domain's mood name; "" for unset, the number as text when unknown
    (the domain validation then names checkin.mood)."""
    if value == 0:
        return ""
    try:
        return play_pb2.Mood.Name(value).removeprefix("MOOD_")
    except ValueError:
        return str(value)


# -- Struct ------------------------------------------------------------------------------


def _value(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "number_value":
        return v.number_value
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_dict(v.struct_value)
    if kind == "list_value":
        return [_value(x) for x in v.list_value.values]
    return None


def struct_dict(s: struct_pb2.Struct) -> dict[str, Any]:
    return {k: _value(v) for k, v in s.fields.items()}


def to_struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


# -- submissions in --------------------------------------------------------------------


def session_from_pb(s: play_pb2.GameSession, child_id: str) -> Session:
    return Session(
        session_id=s.session_id, child_id=child_id, game_id=s.game_id,
        game_version=s.game_version, started_at=from_ts(s.started_at, "session.started_at"),
        ended_at=from_ts(s.ended_at, "session.ended_at"),
        trials=tuple(
            Trial(t.index, struct_dict(t.stimulus), struct_dict(t.response), t.correct,
                  t.responded, t.reaction_time_ms,
                  from_ts(t.presented_at, f"session.trials[{i}].presented_at"),
                  from_ts(t.responded_at, f"session.trials[{i}].responded_at"))
            for i, t in enumerate(s.trials)),
    )


def checkin_from_pb(c: play_pb2.MoodCheckIn, child_id: str) -> MoodCheckIn:
    """May carry an invalid mood string: validate with catalog.validate_mood_checkin."""
    return MoodCheckIn(c.checkin_id, child_id, mood_name_from_pb(c.mood),  # type: ignore[arg-type]
                       c.intensity, from_ts(c.recorded_at, "checkin.recorded_at"))  # type: ignore[arg-type]


# -- stored data out -------------------------------------------------------------------


def metric_pb(m: MetricValue) -> play_pb2.MetricValue:
    return play_pb2.MetricValue(name=m.name, value=m.value, unit=m.unit, normed=m.normed,
                                z_score=m.z_score, percentile=m.percentile,
                                norm_source=m.norm_source)


def result_pb(r: SessionResult, *, xp_pending: bool = False,
              received_at: datetime | None = None) -> play_pb2.SessionResult:
    return play_pb2.SessionResult(
        session_id=r.session_id, child_id=r.child_id, game_id=r.game_id,
        game_version=r.game_version,
        metrics=[metric_pb(m) for m in sorted(r.metrics, key=lambda m: m.name)],
        valid_trials=r.valid_trials, excluded_trials=r.excluded_trials,
        xp_awarded=r.xp_awarded, xp_pending=xp_pending, received_at=to_ts(received_at),
    )


def session_pb(s: Session) -> play_pb2.GameSession:
    return play_pb2.GameSession(
        session_id=s.session_id, child_id=s.child_id, game_id=s.game_id,
        game_version=s.game_version, started_at=to_ts(s.started_at), ended_at=to_ts(s.ended_at),
        trials=[play_pb2.Trial(
            index=t.index, stimulus=to_struct(t.stimulus), response=to_struct(t.response),
            correct=t.correct, responded=t.responded, reaction_time_ms=t.reaction_time_ms,
            presented_at=to_ts(t.presented_at), responded_at=to_ts(t.responded_at),
        ) for t in s.trials],
    )


def checkin_pb(c: MoodCheckIn) -> play_pb2.MoodCheckIn:
    return play_pb2.MoodCheckIn(checkin_id=c.checkin_id, child_id=c.child_id,
                                mood=play_pb2.Mood.Value("MOOD_" + c.mood.value),
                                intensity=c.intensity, recorded_at=to_ts(c.recorded_at))


# -- catalog and tips --------------------------------------------------------------------


def _field_pb(f: FieldSpec) -> play_pb2.TrialField:
    return play_pb2.TrialField(
        name=f.name, type=play_pb2.TrialFieldType.Value("TRIAL_FIELD_TYPE_" + f.type.value),
        required=f.required, description=f.description, min=f.min, max=f.max,
        allowed_values=list(f.allowed_values))


def game_pb(g: GameSpec) -> play_pb2.Game:
    return play_pb2.Game(
        game_id=g.game_id, version=g.version, title=g.title, description=g.description,
        domain=domain_pb(g.domain), area=play_pb2.SkillArea.Value("SKILL_AREA_" + g.area.value),
        stimulus_fields=[_field_pb(f) for f in g.stimulus_fields],
        response_fields=[_field_pb(f) for f in g.response_fields],
        metrics=g.metric_names, min_trials=g.min_trials, max_trials=g.max_trials,
        min_age_years=g.min_age_years, max_age_years=g.max_age_years,
        xp_per_session=g.xp_per_session, correct_rule=correct_rule_text(g))


def tip_pb(t: Tip) -> report_pb2.Tip:
    return report_pb2.Tip(tip_id=t.tip_id, domain=domain_pb(t.domain), age_band=t.age_band,
                          title=t.title, body=t.body, when_to_seek_help=t.when_to_seek_help)


# -- flags and reports -------------------------------------------------------------------


def _evidence_pb(e: FlagEvidence) -> report_pb2.FlagEvidence:
    return report_pb2.FlagEvidence(metric=e.metric, value=e.value, z_score=e.z_score,
                                   session_id=e.session_id, observed_at=to_ts(e.observed_at))


def norm_strength_pb(s: NormStrength) -> int:
    return report_pb2.NormStrength.Value("NORM_STRENGTH_" + s.value)


def flag_pb(f: Flag) -> report_pb2.Flag:
    return report_pb2.Flag(
        flag_id=f.flag_id, child_id=f.child_id,
        kind=report_pb2.FlagKind.Value("FLAG_KIND_" + f.kind.value),
        level=report_pb2.FlagLevel.Value("FLAG_LEVEL_" + f.level.value),
        domain=domain_pb(f.domain), headline=f.headline, explanation=f.explanation,
        evidence=[_evidence_pb(e) for e in f.evidence], tips=[tip_pb(t) for t in f.tips],
        session_count=f.session_count, first_seen_at=to_ts(f.first_seen_at),
        updated_at=to_ts(f.updated_at), norm_strength=norm_strength_pb(f.norm_strength))


def _domain_score_pb(s: DomainScore) -> report_pb2.DomainScore:
    return report_pb2.DomainScore(
        domain=domain_pb(s.domain), area=play_pb2.SkillArea.Value("SKILL_AREA_" + s.area.value),
        enough_data=s.enough_data, score=s.score, z_score=s.z_score, percentile=s.percentile,
        session_count=s.session_count, norm_source=s.norm_source, note=s.note,
        norm_strength=norm_strength_pb(s.norm_strength), norm_children=s.norm_children,
        norm_note=s.norm_note)


def _area_pb(a: AreaScore) -> report_pb2.AreaScore:
    return report_pb2.AreaScore(area=play_pb2.SkillArea.Value("SKILL_AREA_" + a.area.value),
                                enough_data=a.enough_data, score=a.score)


def _trend_pb(t: TrendPoint) -> report_pb2.TrendPoint:
    return report_pb2.TrendPoint(domain=domain_pb(t.domain), week_start=to_ts(t.week_start),
                                 enough_data=t.enough_data, score=t.score,
                                 session_count=t.session_count)


def _play_pb(p: PlayTime) -> report_pb2.PlayTime:
    return report_pb2.PlayTime(period_start=to_ts(p.period_start), seconds=p.seconds,
                               sessions=p.sessions)


def summary_pb(s: ChildSummary) -> report_pb2.ChildSummary:
    return report_pb2.ChildSummary(
        child_id=s.child_id, age_months=s.age_months, strengths=list(s.strengths),
        watch_areas=list(s.watch_areas), mood_trend=s.mood_trend,
        sessions_last_four_weeks=s.sessions_last_four_weeks, text=s.text)


def report_pb(r: ChildReport) -> report_pb2.ChildReport:
    """The report analytics owns; ChildReport.avatar is the gateway's to fill."""
    return report_pb2.ChildReport(
        child_id=r.child_id, generated_at=to_ts(r.generated_at),
        domain_scores=[_domain_score_pb(s) for s in r.domain_scores],
        area_scores=[_area_pb(a) for a in r.area_scores],
        weekly_trends=[_trend_pb(t) for t in r.weekly_trends],
        daily_play=[_play_pb(p) for p in r.daily_play],
        weekly_play=[_play_pb(p) for p in r.weekly_play],
        current_streak_days=r.current_streak_days, longest_streak_days=r.longest_streak_days,
        flags=[flag_pb(f) for f in r.flags], summary=summary_pb(r.summary),
        enough_data=r.enough_data, not_enough_data_reason=r.not_enough_data_reason)


def statements_pb(statements: Iterable[Mapping[str, Any]]) -> list[struct_pb2.Struct]:
    return [to_struct(s) for s in statements]


# -- the streamed export -------------------------------------------------------------------


def raw_session_pb(raw) -> play_pb2.GameSession:
    """A stored session with its trials (repo.reads.RawSession) as submitted."""
    r = raw.row
    return session_pb(Session(r.session_id, r.child_id, r.game_id, r.game_version,
                              r.started_at, r.ended_at, raw.trials))


def export_record(child_id: str, kind: str, rec) -> analytics_pb2.ChildExportRecord:
    """One record of services.analytics.domain.exporting.records as protobuf."""
    out = analytics_pb2.ChildExportRecord(child_id=child_id)
    if kind == "session":
        out.session.CopyFrom(raw_session_pb(rec))
    elif kind == "result":
        out.result.CopyFrom(result_pb(rec.result, received_at=rec.raw.row.received_at))
    elif kind == "statement":
        out.statement.CopyFrom(to_struct(rec))
    elif kind == "mood_checkin":
        out.mood_checkin.CopyFrom(checkin_pb(rec))
    elif kind == "flag":
        out.flag.CopyFrom(flag_pb(rec))
    else:
        raise ValueError(f"unknown export record kind {kind!r}")
    return out
