"""The profile server as infrastructure sees it: health, reflection, credentials."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from avatario.profile.v1 import profile_pb2 as pb
from avatario.profile.v1 import profile_pb2_grpc
from services.common.clients import internal_channel
from services.common.db import Database
from services.profile.main import SERVICE_NAME, build_server
from tests.helpers import promtool_check
from tests.integration.profile.conftest import profile_settings
from tests.integration.profile.support import fails, new_email


async def test_health_answers_serving(profile):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{profile.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_profile_service(profile):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{profile.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)

        async def requests():
            yield reflection_pb2.ServerReflectionRequest(list_services="")

        names = []
        async for resp in stub.ServerReflectionInfo(requests()):
            names.extend(s.name for s in resp.list_services_response.service)
    assert SERVICE_NAME == "avatario.profile.v1.ProfileService"
    assert SERVICE_NAME in names


async def test_calls_without_the_internal_credential_are_unauthenticated(profile):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{profile.port}") as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        req = pb.CreateParentRequest(email=new_email(), password="x" * 12, display_name="A")
        await fails(stub.CreateParent(req), grpc.StatusCode.UNAUTHENTICATED)
        await fails(stub.CreateParent(req, metadata=[("x-avatario-internal-token", "wrong")]),
                    grpc.StatusCode.UNAUTHENTICATED)
        await fails(stub.ListAvatarItems(pb.ListAvatarItemsRequest()),
                    grpc.StatusCode.UNAUTHENTICATED)


async def test_metrics_include_grpc_and_domain_counters(profile_db_url):
    settings = profile_settings(profile_db_url, metrics_port=0)
    server, port = await build_server(settings, Database(profile_db_url))
    await server.start()
    await server.set_serving()
    try:
        async with internal_channel(f"127.0.0.1:{port}", settings, caller="tests") as channel:
            stub = profile_pb2_grpc.ProfileServiceStub(channel)
            await fails(stub.Authenticate(pb.AuthenticateRequest(
                email=new_email(), password="whatever it is")), grpc.StatusCode.UNAUTHENTICATED)
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        text = body.decode()
    finally:
        await server.stop(0)
    assert 'avatario_profile_authentications_total{kind="parent",result="failed"} 1.0' in text
    assert ('grpc_server_handled_total{grpc_code="UNAUTHENTICATED",grpc_method="Authenticate",'
            'grpc_service="avatario.profile.v1.ProfileService",grpc_type="unary"} 1.0') in text
    promtool_check(text)
