"""Protocol fuzzing, short profile: every public RPC (as a parent, a device, anonymously,
with bogus credentials) and every internal RPC (with and without the internal token)
gets a few generated requests on the real stack, on SQLite and on PostgreSQL.

No call may end INTERNAL or UNKNOWN; no rejected write may change a row count in
any service database; every server is SERVING at the end. Generation is seeded,
so a run is reproducible. The long run is `python -m bench fuzz`.
"""

from __future__ import annotations

import random

import pytest

from tests.fuzz.driver import Driver, World, all_targets, build_model, fuzz_stack, health
from tests.integration.gateway.conftest import migrated_urls

CASES_PER_TARGET = 3
SEED = 20_240_610


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_urls(request, tmp_path_factory):
    with migrated_urls(request.param, tmp_path_factory) as urls:
        yield urls


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_model(tmp_path_factory.mktemp("fuzz-model"))


def report(findings) -> str:
    return "\n".join(f"{f.target} as {f.identity}: {f.code} {f.details!r} <- {f.request}"
                     for f in findings[:30])


async def test_every_rpc_survives_generated_requests(db_urls, model_path):
    async with fuzz_stack(db_urls, model_path) as stack:
        world = World()
        await world.populate(stack, rng=random.Random(SEED))
        driver = Driver(stack, world, seed_value=SEED)
        try:
            await driver.run(CASES_PER_TARGET)
        finally:
            await driver.close()
        status = await health(stack)

    targets = all_targets()
    called = {(t.name, t.identity) for t in targets}
    assert len(called) == len(targets) and sum(s.cases for s in driver.stats.values()) >= len(targets)
    assert not driver.findings, "INTERNAL/UNKNOWN answers:\n" + report(driver.findings)
    assert not driver.partials, "rejected writes that changed rows:\n" + report(driver.partials)
    assert sum(s.writes_checked for s in driver.stats.values()) > 0
    assert set(status.values()) == {"SERVING"}, status
