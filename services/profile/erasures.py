"""Operator side of erasure after a restore (the profile CLI's `erased-families`
and `replay-erasures`).

Every erasure leaves a tombstone (family id and time, nothing personal). Before
restoring a backup an operator exports the list; afterwards `replay` erases, in
profile, every listed family the backup brought back. The same list feeds
analytics' `erase-families`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from services.common.db import Database, in_transaction, read
from services.common.timeutil import utcnow
from services.profile import models as m
from services.profile.repo import family


@dataclass(frozen=True)
class Replayed:
    family_id: str
    # True: the family was back (restored) and is erased again; False: it was absent.
    erased: bool
    # Absent, and its tombstone was lost with the restore: written again.
    tombstone_restored: bool = False
    deleted_rows: dict[str, int] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.deleted_rows.values())


async def erased_families(db: Database, *, since: datetime | None = None) -> list[m.ErasedFamily]:
    return await read(db, lambda s: family.list_erased_families(s, since=since))


async def replay(db: Database, family_ids: Iterable[str], *,
                 clock: Callable[[], datetime] = utcnow) -> list[Replayed]:
    """Erase every listed family that exists (each in its own transaction, so a
    rerun after a failure carries on); absent ones are reported, not an error.
    Every listed family ends with a tombstone, so the list survives the next
    restore too."""
    out = []
    for family_id in family_ids:
        async def work(session, family_id=family_id) -> Replayed:
            if not await family.family_exists(session, family_id):
                kept = await family.keep_tombstone(session, family_id, clock())
                return Replayed(family_id, erased=False, tombstone_restored=kept)
            result = await family.erase_family(session, family_id, now=clock())
            return Replayed(family_id, erased=True, deleted_rows=result.deleted_rows)

        out.append(await in_transaction(db, work))
    return out
