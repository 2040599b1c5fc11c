"""The versioned game catalog (data/games.json) and session validation.

The catalog is data: games, their trial schema, metrics and scoring family. It is
loaded and checked once at start (`load_catalog`); a malformed file raises
`CatalogError` and the service refuses to start.

`validate_session` checks a submitted session against the catalog and raises one
`InvalidArgument` listing every violation, each named by its proto field path
(`session.trials[3].reaction_time_ms`).

A trial's `correct` is the server's to decide where the game states a rule
(`correct_rule`, published in ListGames as `Game.correct_rule` by
`correct_rule_text`): `derive_correct` sets it from stimulus and response, and
the value a client sent is ignored; only games without a rule keep it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.analytics.domain.types import (
    DOMAIN_AREA,
    FieldType,
    Mood,
    MoodCheckIn,
    Session,
    SkillArea,
    SkillDomain,
    utc,
)
from services.common.errors import InvalidArgument

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_GAMES_PATH = DATA_DIR / "games.json"

MAX_REACTION_TIME_MS = 30_000
CLOCK_SKEW = timedelta(minutes=2)
# Slack between a trial's timestamps and its reaction time (device clocks are coarse).
RT_TIMESTAMP_SLACK_MS = 500
RT_TIMESTAMP_SLACK_FRACTION = 0.2
MAX_SESSION_DURATION = timedelta(hours=2)
SCORING_FAMILIES = ("corsi", "go_nogo", "tower", "number_comparison", "emotion_faces", "social_choices")


class CatalogError(ValueError):
    """The catalog (or another data file) is malformed."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FieldSpec(_Frozen):
    """One stimulus/response field (mirrors the TrialField proto, plus item bounds)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: FieldType
    required: bool = False
    description: str = ""
    min: float = 0.0
    max: float = 0.0
    allowed_values: tuple[str, ...] = ()
    # For INTEGER_LIST: bounds of each item (not in the proto).
    item_min: float | None = None
    item_max: float | None = None

    @property
    def bounded(self) -> bool:
        return not (self.min == 0 and self.max == 0)


class MetricDef(_Frozen):
    name: str
    unit: str
    direction: Literal["higher", "lower", "none"]
    min_trials: int = Field(ge=1)
    min_trials_by_class: dict[str, int] = Field(default_factory=dict)
    family: bool = False  # name ends with "*": a family of metrics sharing this definition
    description: str = ""

    @property
    def higher_is_better(self) -> bool | None:
        return {"higher": True, "lower": False}.get(self.direction)


class CorrectRule(_Frozen):
    type: Literal["equals", "field_true", "larger_side", "none"]
    stimulus: str | None = None
    response: str | None = None
    left: str | None = None
    right: str | None = None
    default_response: Any = None


class GameSpec(_Frozen):
    game_id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,62}$")
    version: int = Field(ge=1)
    title: str
    description: str
    domain: SkillDomain
    area: SkillArea
    scoring: str
    min_trials: int = Field(ge=1)
    max_trials: int = Field(ge=1)
    min_age_years: int = Field(ge=0)
    max_age_years: int = Field(ge=0)
    xp_per_session: int = Field(ge=0)
    anticipation_ms: int = Field(default=150, ge=0)
    stimulus_fields: tuple[FieldSpec, ...]
    response_fields: tuple[FieldSpec, ...]
    responded_field: str | None = None
    correct_rule: CorrectRule
    metrics: tuple[MetricDef, ...]
    primary_metrics: dict[str, float]
    success_metric: str | None = None
    success_threshold: float | None = None

    @model_validator(mode="after")
    def _check(self) -> GameSpec:
        if self.scoring not in SCORING_FAMILIES:
            raise ValueError(f"unknown scoring family {self.scoring!r}")
        if self.domain not in DOMAIN_AREA or self.domain == SkillDomain.MOOD:
            raise ValueError(f"game domain {self.domain} is not a skill domain")
        if DOMAIN_AREA[self.domain] != self.area:
            raise ValueError(f"area {self.area} does not match domain {self.domain}")
        if self.min_trials > self.max_trials or self.min_age_years > self.max_age_years:
            raise ValueError("min greater than max")
        for fields in (self.stimulus_fields, self.response_fields):
            names = [f.name for f in fields]
            if len(set(names)) != len(names):
                raise ValueError("duplicate field names")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("duplicate metric names")
        for name, weight in self.primary_metrics.items():
            d = self.metric_def(name)
            if d is None or d.higher_is_better is None or weight <= 0:
                raise ValueError(f"primary metric {name!r} must be a declared, directed metric")
        if self.success_metric is not None and self.metric_def(self.success_metric) is None:
            raise ValueError(f"unknown success metric {self.success_metric!r}")
        stim = {f.name for f in self.stimulus_fields}
        resp = {f.name for f in self.response_fields}
        r = self.correct_rule
        refs = {"stimulus": (r.stimulus, stim), "response": (r.response, resp),
                "left": (r.left, stim), "right": (r.right, stim)}
        for key, (ref, pool) in refs.items():
            if ref is not None and ref not in pool:
                raise ValueError(f"correct_rule.{key} refers to unknown field {ref!r}")
        if self.responded_field is not None and self.responded_field not in resp:
            raise ValueError(f"responded_field {self.responded_field!r} is not a response field")
        return self

    @property
    def key(self) -> tuple[str, int]:
        return (self.game_id, self.version)

    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def metric_def(self, name: str) -> MetricDef | None:
        for m in self.metrics:
            if m.name == name or (m.family and name.startswith(m.name.rstrip("*"))):
                return m
        return None


class CheckinSpec(_Frozen):
    checkin_type: str
    version: int = Field(ge=1)
    title: str
    description: str
    domain: SkillDomain
    area: SkillArea
    moods: tuple[Mood, ...]
    intensity_min: int
    intensity_max: int
    min_age_years: int
    max_age_years: int
    xp_per_checkin: int = Field(ge=0)


class _CatalogFile(_Frozen):
    catalog_version: str
    games: tuple[GameSpec, ...]
    checkins: tuple[CheckinSpec, ...]


class Catalog:
    """The loaded catalog. Listing order is file order (stable for pagination)."""

    def __init__(self, version: str, games: Iterable[GameSpec], checkins: Iterable[CheckinSpec]):
        self.version = version
        self.games: tuple[GameSpec, ...] = tuple(games)
        self.checkins: tuple[CheckinSpec, ...] = tuple(checkins)
        self._by_key: dict[tuple[str, int], GameSpec] = {}
        for g in self.games:
            if g.key in self._by_key:
                raise CatalogError(f"duplicate game {g.game_id} v{g.version}")
            self._by_key[g.key] = g
        if not any(c.checkin_type == "mood" for c in self.checkins):
            raise CatalogError("the catalog needs a mood check-in")

    def get(self, game_id: str, version: int) -> GameSpec | None:
        return self._by_key.get((game_id, version))

    def versions(self, game_id: str) -> list[int]:
        return sorted(v for (g, v) in self._by_key if g == game_id)

    def latest(self, game_id: str) -> GameSpec | None:
        vs = self.versions(game_id)
        return self._by_key[(game_id, vs[-1])] if vs else None

    def games_for_domain(self, domain: SkillDomain) -> list[GameSpec]:
        return [g for g in self.games if g.domain == domain]

    @property
    def mood(self) -> CheckinSpec:
        return next(c for c in self.checkins if c.checkin_type == "mood")


def load_catalog(path: Path | str = DEFAULT_GAMES_PATH) -> Catalog:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        parsed = _CatalogFile.model_validate(raw)
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        raise CatalogError(f"bad game catalog {path}: {exc}") from exc
    return Catalog(parsed.catalog_version, parsed.games, parsed.checkins)


# -- validation ------------------------------------------------------------------------


def _missing(ts: datetime | None) -> bool:
    return ts is None or utc(ts).timestamp() == 0


def _is_int(v: Any) -> bool:
    # google.protobuf.Struct carries every number as a double: 3.0 is an integer.
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and math.isfinite(v) and v.is_integer()


def _is_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def check_field(spec: FieldSpec, value: Any, path: str, out: list[tuple[str, str]]) -> None:
    """Append violations of one stimulus/response value against its FieldSpec."""
    t = spec.type
    if t == FieldType.BOOLEAN:
        if not isinstance(value, bool):
            out.append((path, "must be a boolean"))
        return
    if t == FieldType.STRING:
        if not isinstance(value, str):
            out.append((path, "must be a string"))
        elif spec.allowed_values and value not in spec.allowed_values:
            out.append((path, f"must be one of: {', '.join(spec.allowed_values)}"))
        elif len(value) > 200:
            out.append((path, "must be at most 200 characters"))
        return
    if t in (FieldType.INTEGER, FieldType.NUMBER):
        ok = _is_int(value) if t == FieldType.INTEGER else _is_number(value)
        if not ok:
            out.append((path, "must be an integer" if t == FieldType.INTEGER else "must be a number"))
        elif spec.bounded and not spec.min <= value <= spec.max:
            out.append((path, f"must be between {_fmt(spec.min)} and {_fmt(spec.max)}"))
        return
    # INTEGER_LIST
    if not isinstance(value, list | tuple) or not all(_is_int(x) for x in value):
        out.append((path, "must be a list of integers"))
        return
    if spec.bounded and not spec.min <= len(value) <= spec.max:
        out.append((path, f"must have between {_fmt(spec.min)} and {_fmt(spec.max)} items"))
    lo = -math.inf if spec.item_min is None else spec.item_min
    hi = math.inf if spec.item_max is None else spec.item_max
    for i, x in enumerate(value):
        if not lo <= x <= hi:
            out.append((f"{path}[{i}]", f"must be between {_fmt(lo)} and {_fmt(hi)}"))
            break


def _check_struct(
    fields: tuple[FieldSpec, ...],
    values: Mapping[str, Any],
    path: str,
    require: bool,
    out: list[tuple[str, str]],
) -> None:
    specs = {f.name: f for f in fields}
    for name in values:
        if name not in specs:
            out.append((f"{path}.{name}", "unknown field"))
    for spec in fields:
        if spec.name not in values or values[spec.name] is None:
            if spec.required and require:
                out.append((f"{path}.{spec.name}", "is required"))
            continue
        check_field(spec, values[spec.name], f"{path}.{spec.name}", out)


def expected_correct(game: GameSpec, stimulus: Mapping[str, Any], response: Mapping[str, Any]) -> bool | None:
    """What `correct` must be under the game's rule; None when the rule cannot tell."""
    r = game.correct_rule
    if r.type == "none":
        return None
    if r.type == "field_true":
        v = response.get(r.response or "")
        return v if isinstance(v, bool) else None
    if r.type == "equals":
        s = stimulus.get(r.stimulus or "")
        v = response.get(r.response or "", r.default_response)
        if s is None or v is None:
            return None if s is None else False
        if isinstance(s, list | tuple):
            if not all(_is_number(x) for x in s):
                return None
            if not isinstance(v, list | tuple) or not all(_is_number(x) for x in v):
                return None if isinstance(v, list | tuple) else False
            return [float(x) for x in s] == [float(x) for x in v]
        return bool(s == v)
    # larger_side
    left, right = stimulus.get(r.left or ""), stimulus.get(r.right or "")
    side = response.get(r.response or "")
    if not (_is_number(left) and _is_number(right)) or left == right:
        return None
    if side is None:
        return False
    return bool(side == ("left" if float(left) > float(right) else "right"))  # type: ignore[arg-type]


def correct_rule_text(game: GameSpec) -> str:
    """The game's rule for `correct` in plain words ("" when it has none)."""
    r = game.correct_rule
    if r.type == "equals":
        text = f"correct = (response.{r.response} == stimulus.{r.stimulus})"
        if any(f.name == r.stimulus and f.type == FieldType.INTEGER_LIST for f in game.stimulus_fields):
            text += ": the same items in the same order"
        if r.default_response is not None:
            text += f"; a missing response.{r.response} counts as {str(r.default_response).lower()}"
        return text
    if r.type == "field_true":
        return f"correct = response.{r.response} (false when it is missing)"
    if r.type == "larger_side":
        return (f'correct = (response.{r.response} names the side with the larger number: "left" when '
                f'stimulus.{r.left} > stimulus.{r.right}, "right" when it is smaller; a missing '
                f"response.{r.response} is incorrect); when both are equal the value sent is kept")
    return ""


def derive_correct(session: Session, game: GameSpec) -> Session:
    """`session` with each trial's `correct` set by the game's rule where the rule
    can tell (see `expected_correct`); other trials keep the value sent."""
    trials = []
    changed = False
    for t in session.trials:
        expected = expected_correct(game, t.stimulus, t.response)
        if expected is not None and expected != t.correct:
            t = replace(t, correct=expected)
            changed = True
        trials.append(t)
    return replace(session, trials=tuple(trials)) if changed else session


def validate_session(session: Session, catalog: Catalog, now: datetime) -> None:
    """Raise InvalidArgument listing every problem with a submitted session."""
    out: list[tuple[str, str]] = []
    now = utc(now)
    limit = now + CLOCK_SKEW

    if not session.session_id:
        out.append(("session.session_id", "is required"))
    if not session.child_id:
        out.append(("session.child_id", "is required"))

    game = catalog.get(session.game_id, session.game_version)
    if not session.game_id:
        out.append(("session.game_id", "is required"))
    elif not catalog.versions(session.game_id):
        out.append(("session.game_id", f"unknown game {session.game_id!r}"))
    elif game is None:
        known = ", ".join(str(v) for v in catalog.versions(session.game_id))
        out.append(("session.game_version", f"unknown version {session.game_version} of "
                    f"{session.game_id!r} (known: {known})"))

    start = None if _missing(session.started_at) else utc(session.started_at)  # type: ignore[arg-type]
    end = None if _missing(session.ended_at) else utc(session.ended_at)  # type: ignore[arg-type]
    if start is None:
        out.append(("session.started_at", "is required"))
    elif start > limit:
        out.append(("session.started_at", "must not be in the future"))
    if end is None:
        out.append(("session.ended_at", "is required"))
    elif end > limit:
        out.append(("session.ended_at", "must not be in the future"))
    if start is not None and end is not None:
        if end < start:
            out.append(("session.ended_at", "must not be before started_at"))
        elif end - start > MAX_SESSION_DURATION:
            out.append(("session.ended_at", "session must not last longer than 2 hours"))

    n = len(session.trials)
    if game is not None and not game.min_trials <= n <= game.max_trials:
        out.append(("session.trials", f"must have between {game.min_trials} and "
                    f"{game.max_trials} trials (got {n})"))
    elif game is None and n == 0:
        out.append(("session.trials", "is required"))
    if n > 1000:
        out.append(("session.trials", "must have at most 1000 trials"))
        raise InvalidArgument(out)

    base = session.trials[0].index if n else 0
    if base not in (0, 1):
        base = 0
    prev_presented: datetime | None = None
    for i, t in enumerate(session.trials):
        p = f"session.trials[{i}]"
        if t.index != base + i:
            out.append((f"{p}.index", f"must be {base + i}: indices must be unique, contiguous "
                        f"and in order, starting at 0 or 1"))
        rt = t.reaction_time_ms
        if t.responded:
            if not 0 < rt <= MAX_REACTION_TIME_MS:
                out.append((f"{p}.reaction_time_ms", f"must be between 1 and {MAX_REACTION_TIME_MS} "
                            "when the child responded"))
        elif rt != 0:
            out.append((f"{p}.reaction_time_ms", "must be 0 when the child did not respond"))

        presented = None if _missing(t.presented_at) else utc(t.presented_at)  # type: ignore[arg-type]
        responded = None if _missing(t.responded_at) else utc(t.responded_at)  # type: ignore[arg-type]
        if presented is None:
            out.append((f"{p}.presented_at", "is required"))
        else:
            if presented > limit:
                out.append((f"{p}.presented_at", "must not be in the future"))
            if start is not None and presented < start:
                out.append((f"{p}.presented_at", "must not be before session.started_at"))
            if end is not None and presented > end:
                out.append((f"{p}.presented_at", "must not be after session.ended_at"))
            if prev_presented is not None and presented < prev_presented:
                out.append((f"{p}.presented_at", "trials must be in time order"))
            prev_presented = presented
        if t.responded:
            if responded is None:
                out.append((f"{p}.responded_at", "is required when the child responded"))
            elif presented is not None:
                if responded < presented:
                    out.append((f"{p}.responded_at", "must not be before presented_at"))
                elif end is not None and responded > end:
                    out.append((f"{p}.responded_at", "must not be after session.ended_at"))
                elif 0 < rt <= MAX_REACTION_TIME_MS:
                    gap_ms = (responded - presented).total_seconds() * 1000.0
                    slack = max(RT_TIMESTAMP_SLACK_MS, RT_TIMESTAMP_SLACK_FRACTION * rt)
                    if abs(gap_ms - rt) > slack:
                        out.append((f"{p}.reaction_time_ms", "does not match responded_at - presented_at"))
        elif responded is not None:
            out.append((f"{p}.responded_at", "must be unset when the child did not respond"))

        if game is None:
            continue
        _check_struct(game.stimulus_fields, t.stimulus, f"{p}.stimulus", True, out)
        _check_struct(game.response_fields, t.response, f"{p}.response", t.responded, out)
        if game.responded_field is not None:
            v = t.response.get(game.responded_field)
            if isinstance(v, bool) and v != t.responded:
                out.append((f"{p}.response.{game.responded_field}", "must equal `responded`"))

    if out:
        raise InvalidArgument(out)


def validate_mood_checkin(checkin: MoodCheckIn, catalog: Catalog, now: datetime) -> None:
    """Raise InvalidArgument listing every problem with a mood check-in."""
    out: list[tuple[str, str]] = []
    spec = catalog.mood
    if not checkin.checkin_id:
        out.append(("checkin.checkin_id", "is required"))
    if not checkin.child_id:
        out.append(("checkin.child_id", "is required"))
    try:
        mood = Mood(checkin.mood)
    except ValueError:
        mood = None
    if mood is None or mood not in spec.moods:
        out.append(("checkin.mood", "is required" if not checkin.mood else "unknown mood"))
    if not spec.intensity_min <= checkin.intensity <= spec.intensity_max:
        out.append(("checkin.intensity", f"must be between {spec.intensity_min} and {spec.intensity_max}"))
    if _missing(checkin.recorded_at):
        out.append(("checkin.recorded_at", "is required"))
    elif utc(checkin.recorded_at) > utc(now) + CLOCK_SKEW:
        out.append(("checkin.recorded_at", "must not be in the future"))
    if out:
        raise InvalidArgument(out)
