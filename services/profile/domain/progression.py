"""XP, levels and evolution stages: pure functions.

The level curve is quadratic in total XP: going from level n to n+1 takes
XP_STEP * n XP, so reaching level L takes XP_STEP * (L-1) * L / 2 XP in total
(level 2 at 100 XP, level 10 at 4,500, level 30 at 43,500). Level 30 is the top;
XP keeps counting there but the level does not change.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from services.profile.domain.enums import EvolutionStage

MIN_LEVEL = 1
MAX_LEVEL = 30
XP_STEP = 100

# (first level of the stage, stage), ascending.
STAGES: tuple[tuple[int, EvolutionStage], ...] = (
    (1, EvolutionStage.EVOLUTION_STAGE_EGG),
    (3, EvolutionStage.EVOLUTION_STAGE_HATCHLING),
    (8, EvolutionStage.EVOLUTION_STAGE_EXPLORER),
    (15, EvolutionStage.EVOLUTION_STAGE_ADVENTURER),
    (23, EvolutionStage.EVOLUTION_STAGE_CHAMPION),
)


def _check_level(level: int) -> None:
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"level must be between {MIN_LEVEL} and {MAX_LEVEL}")


def xp_for_next(level: int) -> int:
    """XP the given level needs before the next one (0 at the top level)."""
    _check_level(level)
    return 0 if level == MAX_LEVEL else XP_STEP * level


def xp_to_reach(level: int) -> int:
    """Total XP at which `level` begins."""
    _check_level(level)
    return XP_STEP * (level - 1) * level // 2


_THRESHOLDS = tuple(xp_to_reach(lv) for lv in range(MIN_LEVEL, MAX_LEVEL + 1))


def level_for_xp(xp: int) -> int:
    if xp < 0:
        raise ValueError("xp must not be negative")
    return bisect_right(_THRESHOLDS, xp)  # thresholds[0] == 0, so the result is >= 1


def stage_for_level(level: int) -> EvolutionStage:
    _check_level(level)
    stage = STAGES[0][1]
    for first, s in STAGES:
        if level >= first:
            stage = s
    return stage


@dataclass(frozen=True)
class Progress:
    xp: int
    level: int
    stage: EvolutionStage
    xp_into_level: int
    xp_for_next_level: int


def progress(xp: int) -> Progress:
    level = level_for_xp(xp)
    return Progress(
        xp=xp,
        level=level,
        stage=stage_for_level(level),
        xp_into_level=xp - xp_to_reach(level),
        xp_for_next_level=xp_for_next(level),
    )
