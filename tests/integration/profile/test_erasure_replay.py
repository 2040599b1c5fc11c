"""Erased-family tombstones and replaying erasures after a restore.

A restore from a backup taken before an erasure brings the family back. The
tombstones (family id and time, nothing personal) survive erasure, the operator
exports them before restoring and replays them afterwards."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta

import grpc
from sqlalchemy import delete, func, insert, select

from avatario.profile.v1 import profile_pb2 as pb
from services.profile import erasures
from services.profile import models as m
from tests.conftest import ROOT
from tests.integration.profile.support import PASSWORD, fails, new_family, new_id
from tests.integration.profile.test_family import populate

C = grpc.StatusCode


async def family_rows(db, family_id: str) -> dict[type, list[dict]]:
    """Every row of the family, per table: what a backup holds."""
    out = {}
    async with db.session() as session:
        for model in m.ERASE_ORDER:
            column = model.id if model is m.Family else model.family_id
            out[model] = [dict(r) for r in (await session.execute(
                select(model.__table__).where(column == family_id))).mappings()]
    return out


async def restore(db, rows: dict[type, list[dict]], *, keep_tombstone: bool = False) -> None:
    """Put the family's rows back, parents before dependants; a backup older than
    the erasure has no tombstone either."""
    async with db.transaction() as session:
        for model in reversed(m.ERASE_ORDER):
            if rows[model]:
                await session.execute(insert(model.__table__), rows[model])
        if not keep_tombstone:
            family_id = rows[m.Family][0]["id"]
            await session.execute(delete(m.ErasedFamily).where(
                m.ErasedFamily.family_id == family_id))


async def tombstones(db) -> list[m.ErasedFamily]:
    return await erasures.erased_families(db)


async def test_erasure_leaves_a_tombstone_with_nothing_personal(profile):
    fam = await new_family(profile)
    ids = await populate(profile, fam)
    assert await tombstones(profile.db) == []
    await profile.stub.EraseFamily(pb.EraseFamilyRequest(family_id=fam.family_id))
    [tomb] = await tombstones(profile.db)
    assert tomb.family_id == fam.family_id
    assert profile.clock.now - timedelta(minutes=5) < tomb.erased_at  # a real time, UTC
    assert set(m.ErasedFamily.__table__.columns.keys()) == {"family_id", "erased_at"}
    needles = {v for k, values in ids.items() if k != "family" for v in values}
    needles |= {fam.email.casefold(), "Sunny", "Alex", "Bedtime"}
    async with profile.db.session() as session:
        for row in (await session.execute(select(m.ErasedFamily.__table__))).all():
            assert not [n for n in needles if any(n in str(v) for v in row)]
    # A second erasure of a gone family is NOT_FOUND and leaves one tombstone.
    await fails(profile.stub.EraseFamily(pb.EraseFamilyRequest(family_id=fam.family_id)),
                C.NOT_FOUND)
    assert [t.family_id for t in await tombstones(profile.db)] == [fam.family_id]


async def test_replay_after_a_restore_erases_the_family_again(profile):
    fam = await new_family(profile)
    await populate(profile, fam)
    other = await new_family(profile)
    backup = await family_rows(profile.db, fam.family_id)
    await profile.stub.EraseFamily(pb.EraseFamilyRequest(family_id=fam.family_id))
    [first] = await tombstones(profile.db)

    await restore(profile.db, backup)  # the family is back, its tombstone is not
    assert await tombstones(profile.db) == []
    resp = await profile.stub.Authenticate(pb.AuthenticateRequest(
        email=fam.email, password=PASSWORD))
    assert resp.parent.family_id == fam.family_id

    never_restored = new_id()  # erased after the backup and created after it too
    done = await erasures.replay(profile.db, [fam.family_id, never_restored])
    assert [(r.family_id, r.erased, r.tombstone_restored) for r in done] == [
        (fam.family_id, True, False), (never_restored, False, True)]
    assert done[0].total_rows == sum(len(rows) for rows in backup.values())
    assert await family_rows(profile.db, fam.family_id) == {
        model: [] for model in m.ERASE_ORDER}
    await fails(profile.stub.Authenticate(pb.AuthenticateRequest(
        email=fam.email, password=PASSWORD)), C.UNAUTHENTICATED)
    assert sorted(t.family_id for t in await tombstones(profile.db)) == sorted(
        [fam.family_id, never_restored])
    # The other family is untouched.
    await profile.stub.GetChild(pb.GetChildRequest(
        family_id=other.family_id, child_id=other.child_id))

    # A restore that kept the tombstone: replaying updates it (one row, later time).
    await restore(profile.db, backup, keep_tombstone=True)
    later = first.erased_at + timedelta(days=3)
    again = await erasures.replay(profile.db, [fam.family_id], clock=lambda: later)
    assert again[0].erased
    rows = {t.family_id: t.erased_at for t in await tombstones(profile.db)}
    assert rows[fam.family_id] == later and len(rows) == 2

    # Idempotent: nothing left to do.
    done = await erasures.replay(profile.db, [fam.family_id, never_restored])
    assert [(r.erased, r.tombstone_restored) for r in done] == [(False, False)] * 2


async def _cli(url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "AVATARIO_PROFILE_DATABASE_URL": url}
    env.pop("AVATARIO_PROFILE_TOKEN_PEPPER", None)  # operator commands need no secrets
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.profile", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_operator_commands_export_and_replay(profile, tmp_path):
    fam = await new_family(profile)
    backup = await family_rows(profile.db, fam.family_id)
    await profile.stub.EraseFamily(pb.EraseFamilyRequest(family_id=fam.family_id))
    url = profile.settings.database_url

    rc, out, err = await _cli(url, "erased-families")
    assert rc == 0, err
    assert out.split() == [fam.family_id]
    rc, out_json, err = await _cli(url, "erased-families", "--json", "--since", "2000-01-01")
    assert rc == 0, err
    assert fam.family_id in out_json and "erased_at" in out_json
    rc, out_future, _ = await _cli(url, "erased-families", "--since", "2999-01-01")
    assert rc == 0 and out_future == ""

    listing = tmp_path / "erased.json"
    listing.write_text(out_json)  # exported before the restore
    await restore(profile.db, backup)
    rc, out, err = await _cli(url, "replay-erasures", str(listing))
    assert rc == 0, err
    assert out.splitlines() == [
        f"erased {fam.family_id} {sum(len(r) for r in backup.values())}"]
    async with profile.db.session() as session:
        assert (await session.execute(select(func.count()).select_from(m.Family).where(
            m.Family.id == fam.family_id))).scalar_one() == 0
    rc, out, _ = await _cli(url, "replay-erasures", str(listing))
    assert rc == 0 and out.splitlines() == [f"absent {fam.family_id}"]

    bad = tmp_path / "bad.txt"
    bad.write_text(f"{fam.family_id}\nnot-a-family\n")
    rc, out, err = await _cli(url, "replay-erasures", str(bad))
    assert rc == 2 and out == "" and "line 2" in err
