from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from avatario.common.v1 import avatar_pb2
from services.profile.domain import progression as pg


def test_curve_endpoints():
    assert pg.xp_to_reach(1) == 0
    assert pg.xp_to_reach(2) == 100
    assert pg.xp_to_reach(3) == 300
    assert pg.xp_to_reach(30) == 43_500
    assert pg.xp_for_next(1) == 100
    assert pg.xp_for_next(29) == 2_900
    assert pg.xp_for_next(30) == 0


def test_steps_grow_and_thresholds_add_up():
    steps = [pg.xp_for_next(n) for n in range(1, 30)]
    assert all(b > a for a, b in zip(steps, steps[1:], strict=False))
    for n in range(1, 30):
        assert pg.xp_to_reach(n + 1) - pg.xp_to_reach(n) == pg.xp_for_next(n)


@pytest.mark.parametrize(("xp", "level"), [(0, 1), (99, 1), (100, 2), (299, 2), (300, 3),
                                           (43_499, 29), (43_500, 30), (10**12, 30)])
def test_level_for_xp(xp, level):
    assert pg.level_for_xp(xp) == level


def test_level_bounds_are_enforced():
    with pytest.raises(ValueError):
        pg.level_for_xp(-1)
    for bad in (0, 31):
        with pytest.raises(ValueError):
            pg.xp_to_reach(bad)
        with pytest.raises(ValueError):
            pg.stage_for_level(bad)


@pytest.mark.parametrize(("level", "stage"), [
    (1, avatar_pb2.EVOLUTION_STAGE_EGG), (2, avatar_pb2.EVOLUTION_STAGE_EGG),
    (3, avatar_pb2.EVOLUTION_STAGE_HATCHLING), (7, avatar_pb2.EVOLUTION_STAGE_HATCHLING),
    (8, avatar_pb2.EVOLUTION_STAGE_EXPLORER), (15, avatar_pb2.EVOLUTION_STAGE_ADVENTURER),
    (22, avatar_pb2.EVOLUTION_STAGE_ADVENTURER), (23, avatar_pb2.EVOLUTION_STAGE_CHAMPION),
    (30, avatar_pb2.EVOLUTION_STAGE_CHAMPION),
])
def test_stages(level, stage):
    assert pg.stage_for_level(level) == stage


@given(st.integers(min_value=0, max_value=10**9))
def test_progress_is_consistent(xp):
    p = pg.progress(xp)
    assert 1 <= p.level <= 30
    assert p.xp_into_level == xp - pg.xp_to_reach(p.level)
    assert p.xp_into_level >= 0
    if p.level < 30:
        assert p.xp_into_level < p.xp_for_next_level
    else:
        assert p.xp_for_next_level == 0


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6))
def test_level_is_monotonic(a, b):
    lo, hi = sorted((a, b))
    assert pg.level_for_xp(lo) <= pg.level_for_xp(hi)
