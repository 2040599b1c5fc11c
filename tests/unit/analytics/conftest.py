from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from avatario_tools.simulation.simulator import draw_child, simulate_session
from services.analytics.domain.catalog import Catalog, load_catalog
from services.analytics.domain.norms import NormTable, load_norms
from services.analytics.domain.tips import TipLibrary, load_tips
from services.analytics.domain.types import Session
from tests.unit.analytics.analytics_helpers import T0


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def norms() -> NormTable:
    return load_norms()


@pytest.fixture(scope="session")
def tips() -> TipLibrary:
    return load_tips()


@pytest.fixture
def make_valid(catalog: Catalog, norms: NormTable) -> Callable[[str], Session]:
    """A valid simulated session of a game, started at T0, for an 8-year-old."""

    def make(game_id: str, seed: int = 1, level: float = 0.0) -> Session:
        rng = random.Random(seed)
        child = draw_child(rng, T0, age_years=(8, 8))
        game = catalog.latest(game_id)
        assert game is not None
        return simulate_session(game, child, level, T0, norms, rng)

    return make
