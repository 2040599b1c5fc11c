"""Profile service throughput over real gRPC, against a baseline RPC in the same run.

A profile server on port 0 (SQLite, and PostgreSQL when reachable), CONCURRENCY
clients. For each operation: calls per second and the ratio to the baseline
(ListAvatarItems: a full round trip through the chassis that touches no
database). Authenticate runs with the production argon2 parameters, so its
ratio shows what a sign-in costs relative to a plain call.
Writes bench/results/profile.json. Run: python -m bench profile
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from avatario.common.v1 import chat_pb2, family_pb2
from avatario.profile.v1 import profile_pb2 as pb
from avatario.profile.v1 import profile_pb2_grpc
from bench.common import calls_per_second, print_table, write_result
from services.common import migrations
from services.common.clients import internal_channel
from services.common.db import Database
from services.common.logs import configure_logging
from services.profile.main import MIGRATIONS, build_server
from services.profile.settings import ProfileSettings

CONCURRENCY = int(os.environ.get("BENCH_PROFILE_CONCURRENCY", "8"))
CALLS = int(os.environ.get("BENCH_PROFILE_CALLS", "400"))
AUTH_CALLS = int(os.environ.get("BENCH_PROFILE_AUTH_CALLS", "24"))
TOKEN = "bench-internal-token-0123456789"
PEPPER = "bench-token-pepper-0123456789"
PASSWORD = "bench passphrase 123"


async def _run_backend(backend: str, url: str) -> list[dict[str, Any]]:
    await asyncio.to_thread(migrations.upgrade, Path(MIGRATIONS), url)
    settings = ProfileSettings(internal_token=TOKEN, port=0, metrics_port=None, database_url=url,
                               token_pepper=PEPPER)
    db = Database(url)
    server, port = await build_server(settings, db)
    await server.start()
    await server.set_serving()
    channel = internal_channel(f"127.0.0.1:{port}", settings, caller="bench")
    stub = profile_pb2_grpc.ProfileServiceStub(channel)
    try:
        email = f"bench-{uuid.uuid4().hex[:8]}@example.org"
        parent = (await stub.CreateParent(pb.CreateParentRequest(
            email=email, password=PASSWORD, display_name="Bench"))).parent
        fam, pid = parent.family_id, parent.parent_id
        await stub.RecordConsent(pb.RecordConsentRequest(
            family_id=fam, parent_id=pid, policy_version="bench",
            scopes=[family_pb2.CONSENT_SCOPE_CHILD_PROFILE,
                    family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT]))
        child = (await stub.CreateChild(pb.CreateChildRequest(
            family_id=fam, parent_id=pid, nickname="Bench", birth_year=2018,
            birth_month=1))).child.child_id
        conv = (await stub.CreateConversation(pb.CreateConversationRequest(
            family_id=fam, child_id=child))).conversation.conversation_id
        run = uuid.uuid4().hex[:8]
        ops: dict[str, tuple[int, Callable[[int], Awaitable[Any]]]] = {
            "ListAvatarItems (baseline)": (CALLS, lambda i: stub.ListAvatarItems(
                pb.ListAvatarItemsRequest(page_size=10))),
            "GetAvatar": (CALLS, lambda i: stub.GetAvatar(pb.GetAvatarRequest(
                family_id=fam, child_id=child))),
            "AwardXp (new source)": (CALLS, lambda i: stub.AwardXp(pb.AwardXpRequest(
                family_id=fam, child_id=child, amount=1, source_id=f"bench:{run}:{i}"))),
            "AwardXp (repeat)": (CALLS, lambda i: stub.AwardXp(pb.AwardXpRequest(
                family_id=fam, child_id=child, amount=1, source_id=f"bench:{run}:0"))),
            "AppendTurn": (CALLS, lambda i: stub.AppendTurn(pb.AppendTurnRequest(
                family_id=fam, conversation_id=conv, turn_id=str(uuid.uuid4()),
                user_message="How can I help with homework?", assistant_message="Short blocks.",
                finish_reason=chat_pb2.FINISH_REASON_STOP))),
            "Authenticate (argon2 prod)": (AUTH_CALLS, lambda i: stub.Authenticate(
                pb.AuthenticateRequest(email=email, password=PASSWORD))),
        }
        rows, baseline = [], None
        for name, (n, call) in ops.items():
            await call(0)  # warm up
            rate = await calls_per_second(n, call, CONCURRENCY)
            baseline = baseline or rate
            rows.append({"backend": backend, "operation": name, "calls": n,
                         "calls_per_s": rate, "vs_baseline": rate / baseline})
        return rows
    finally:
        await channel.close()
        await server.stop(0)


async def _pg_url() -> tuple[str | None, Callable[[], None]]:
    try:
        from tests.conftest import create_pg_database, drop_pg_database

        url = await asyncio.to_thread(create_pg_database)
    except BaseException:  # noqa: BLE001 - no PostgreSQL: SQLite only
        return None, lambda: None
    return url, lambda: drop_pg_database(url)


def main() -> int:
    configure_logging("WARNING", json=False)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += asyncio.run(_run_backend("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db"))
    url, drop = asyncio.run(_pg_url())
    if url:
        try:
            rows += asyncio.run(_run_backend("postgres", url))
        finally:
            drop()
    print_table(f"profile service, {CONCURRENCY} concurrent clients", rows)
    path = write_result("profile", rows, concurrency=CONCURRENCY)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
