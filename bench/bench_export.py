"""Family export size and time at 1, 5 and 20 MiB of history: the streamed export
(PrivacyService.StreamFamilyExport) against the one-message ExportFamilyData, in the
same run (ratios; these machines are shared and noisy).

A family is created through the public API (consents, a child, a paired device),
then bench/export_history.py writes the history straight into the databases (half
daily play, half long chats; 20 MiB is five years of daily play plus chats). Each
size is exported ROUNDS times both ways through a real gateway in front of real
profile and analytics servers (in this process, SQLite, port 0); the median counts.
The one-message export is refused once profile's part passes its 16 MiB send limit
(or analytics' part for one child does), and by any client whose receive limit is
smaller than the whole. Columns:
history_mib (asked), export_mib (bytes the client received), records, messages
(gRPC messages of the stream), stream_s, stream_mib_s, unary_s (or why it failed),
stream_vs_unary (time ratio), unary_4mib_client (whether a client with gRPC's
default 4 MiB receive limit gets the one message; the stream needs no limit
raised). The timed client raises its limit to 64 MiB so the one message can be
timed at all. Writes bench/results/export.json.
Run: python -m bench export
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from avatario.common.v1 import family_pb2
from avatario.gateway.v1 import gateway_pb2 as gw
from avatario.gateway.v1 import gateway_pb2_grpc as gw_grpc
from bench.common import print_table, write_result
from bench.export_history import generate, plan
from services.analytics.main import MIGRATIONS as ANALYTICS_MIGRATIONS
from services.analytics.main import build_analytics
from services.analytics.settings import AnalyticsSettings
from services.common import migrations
from services.common.db import Database
from services.common.timeutil import utcnow
from services.gateway.main import MIGRATIONS as GATEWAY_MIGRATIONS
from services.gateway.main import build_gateway
from services.gateway.settings import GatewaySettings
from services.profile.main import MIGRATIONS as PROFILE_MIGRATIONS
from services.profile.main import build_server as build_profile
from services.profile.settings import ProfileSettings

SIZES_MIB = (1, 5, 20)
ROUNDS = 3
MIB = 1024 * 1024
PASSWORD = "correct horse battery"
TOKEN = secrets.token_urlsafe(24)


async def start(folder: Path):
    urls = {n: f"sqlite+aiosqlite:///{folder / (n + '.db')}"
            for n in ("profile", "analytics", "gateway")}
    for name, path in (("profile", PROFILE_MIGRATIONS), ("analytics", ANALYTICS_MIGRATIONS),
                       ("gateway", GATEWAY_MIGRATIONS)):
        await asyncio.to_thread(migrations.upgrade, Path(path), urls[name])
    common = dict(internal_token=TOKEN, host="127.0.0.1", port=0, metrics_port=None,
                  log_json=False, log_level="WARNING")
    dbs = {n: Database(u, pool_size=4) for n, u in urls.items()}
    profile, pport = await build_profile(ProfileSettings(
        **common, database_url=urls["profile"], argon2_time_cost=1, argon2_memory_cost_kib=256,
        argon2_parallelism=1, token_pepper=secrets.token_urlsafe(24)), dbs["profile"])
    await profile.start()
    await profile.set_serving()
    analytics = await build_analytics(AnalyticsSettings(
        **common, database_url=urls["analytics"], profile_target=f"127.0.0.1:{pport}",
        renorm_interval_s=0, norms_refresh_s=3600), dbs["analytics"])
    await analytics.server.start()
    await analytics.server.set_serving()
    gateway = await build_gateway(GatewaySettings(
        **common, database_url=urls["gateway"], profile_target=f"127.0.0.1:{pport}",
        analytics_target=f"127.0.0.1:{analytics.port}", inference_target="127.0.0.1:9",
        jwt_signing_keys=json.dumps({"k1": secrets.token_urlsafe(32)}), jwt_active_kid="k1",
        rate_limit_rps=1000, rate_limit_burst=1000, backend_deadline_s=30.0,
        public_max_send_bytes=64 * MIB), db=dbs["gateway"])
    await gateway.server.start()
    await gateway.server.set_serving()

    async def stop():
        await gateway.server.stop(0)
        await analytics.server.stop(0)
        await profile.stop(0)
        for db in dbs.values():
            await db.dispose()

    return dbs, gateway.port, stop


async def family(channel, dbs, history_mib: int) -> tuple[tuple, dict]:
    auth, fam = gw_grpc.AuthServiceStub(channel), gw_grpc.FamilyServiceStub(channel)
    device = gw_grpc.DeviceServiceStub(channel)
    up = await auth.SignUp(gw.SignUpRequest(email=f"p{secrets.token_hex(6)}@example.org",
                                            password=PASSWORD, display_name="Alex"))
    md = (("authorization", f"Bearer {up.tokens.access_token}"),)
    await fam.RecordConsent(gw.RecordConsentRequest(scopes=[
        family_pb2.CONSENT_SCOPE_CHILD_PROFILE, family_pb2.CONSENT_SCOPE_GAMEPLAY_ANALYTICS,
        family_pb2.CONSENT_SCOPE_CHAT_ASSISTANT], policy_version="2024-01"), metadata=md)
    child = (await fam.CreateChild(gw.CreateChildRequest(
        nickname="Sunny", birth_year=2016, birth_month=3), metadata=md)).child
    code = (await device.CreatePairingCode(gw.CreatePairingCodeRequest(
        child_id=child.child_id), metadata=md)).code
    await device.PairDevice(gw.PairDeviceRequest(code=code, device_name="Tablet"))
    days, turns = plan(history_mib * MIB)
    made = await generate(dbs["profile"], dbs["analytics"], family_id=up.parent.family_id,
                          parent_id=up.parent.parent_id, child_id=child.child_id,
                          birth_year=2016, birth_month=3, days=days, turns=turns, now=utcnow())
    return md, {"days": made.days, "turns": turns}


async def stream_once(privacy, md) -> tuple[float, int, int, int]:
    t0 = time.perf_counter()
    size = messages = records = 0
    async for resp in privacy.StreamFamilyExport(gw.StreamFamilyExportRequest(), metadata=md):
        size += resp.ByteSize()
        messages += 1
        records += len(resp.profile) + len(resp.analytics)
    return time.perf_counter() - t0, size, messages, records


async def unary_once(privacy, md) -> tuple[float, int] | str:
    t0 = time.perf_counter()
    try:
        resp = await privacy.ExportFamilyData(gw.ExportFamilyDataRequest(), metadata=md)
    except grpc.aio.AioRpcError as err:
        return f"refused: {err.code().name}"
    return time.perf_counter() - t0, resp.ByteSize()


async def run() -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dbs, port, stop = await start(Path(tmp))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_receive_message_length", 64 * MIB)])
        privacy = gw_grpc.PrivacyServiceStub(channel)
        # A client with gRPC's default receive limit (4 MiB), as most apps have.
        plain = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        plain_privacy = gw_grpc.PrivacyServiceStub(plain)
        try:
            for mib in SIZES_MIB:
                md, made = await family(channel, dbs, mib)
                streams = [await stream_once(privacy, md) for _ in range(ROUNDS)]
                unary = [await unary_once(privacy, md) for _ in range(ROUNDS)]
                default_client = await unary_once(plain_privacy, md)
                stream_s = statistics.median(s[0] for s in streams)
                _, size, messages, records = streams[0]
                ok = [u for u in unary if not isinstance(u, str)]
                unary_s = statistics.median(u[0] for u in ok) if ok else None
                rows.append({
                    "history_mib": mib, "days_of_play": made["days"], "chat_turns": made["turns"],
                    "export_mib": round(size / MIB, 2), "records": records,
                    "messages": messages, "stream_s": round(stream_s, 3),
                    "stream_mib_s": round(size / MIB / stream_s, 2),
                    "unary_s": round(unary_s, 3) if unary_s is not None else unary[0],
                    "stream_vs_unary": round(stream_s / unary_s, 2) if unary_s else "n/a",
                    "unary_4mib_client": default_client if isinstance(default_client, str)
                    else "ok",
                })
        finally:
            await plain.close()
            await channel.close()
            await stop()
    return rows


def main() -> int:
    rows = asyncio.run(run())
    print_table("Family export: streamed vs one message (SQLite, in-process servers)", rows)
    path = write_result("export", rows, rounds=ROUNDS, database="sqlite")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
