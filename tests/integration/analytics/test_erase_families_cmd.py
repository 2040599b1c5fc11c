"""`python -m services.analytics erase-families FILE`: after a restore, the play
data of every family in profile's erased-families list is erased again."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.conftest import ROOT
from tests.integration.analytics.support import new_kid, rows_mentioning, simulate, submit_all


async def _cli(url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "AVATARIO_ANALYTICS_DATABASE_URL": url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.analytics", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_erase_families_from_a_list(analytics, tmp_path):
    kid = new_kid(21)
    sibling = new_kid(22, family_id=kid.ref.family_id)
    other = new_kid(23)
    for seed, k in enumerate((kid, sibling, other)):
        await submit_all(analytics.stub, k, simulate(k, seed=seed, weeks=1))
    gone = {kid.ref.child_id, sibling.ref.child_id}
    assert "game_sessions" in await rows_mentioning(analytics.db, gone)

    listing = tmp_path / "erased.txt"
    listing.write_text(f"# from profile erased-families\n{kid.ref.family_id}\n")
    rc, out, err = await _cli(analytics.settings.database_url, "erase-families", str(listing))
    assert rc == 0, err
    [line] = out.splitlines()
    assert line.startswith(f"erased {kid.ref.family_id} ") and int(line.split()[-1]) > 0
    assert await rows_mentioning(analytics.db, gone) == {}
    assert "game_sessions" in await rows_mentioning(analytics.db, {other.ref.child_id})

    rc, out, _ = await _cli(analytics.settings.database_url, "erase-families", str(listing))
    assert rc == 0 and out.splitlines() == [f"erased {kid.ref.family_id} 0"]
    listing.write_text("not-a-family-id\n")
    rc, out, err = await _cli(analytics.settings.database_url, "erase-families", str(listing))
    assert rc == 2 and out == "" and "line 1" in err
