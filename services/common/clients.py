"""Channels for internal calls: service token, request-id propagation, mTLS,
deadlines and retries for idempotent methods (gRPC service config)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from services.common.interceptors import (
    CALLER_KEY,
    INTERNAL_TOKEN_KEY,
    REQUEST_ID_KEY,
    current_request_id,
)
from services.common.server import read_bytes
from services.common.settings import ServiceSettings


class _Metadata:
    """Adds the service credential, the caller's name and the current request id."""

    def __init__(self, token: str, caller: str) -> None:
        self._static = ((INTERNAL_TOKEN_KEY, token), (CALLER_KEY, caller))

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or ())
        metadata.extend(self._static)
        rid = current_request_id.get()
        if rid and not any(k == REQUEST_ID_KEY for k, _ in metadata):
            metadata.append((REQUEST_ID_KEY, rid))
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, grpc.aio.Metadata(*metadata),
            details.credentials, details.wait_for_ready,
        )


# grpc.aio files each interceptor under one call type only, so one class per type.
class _UnaryUnary(_Metadata, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._details(details), request)


class _UnaryStream(_Metadata, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._details(details), request)


def metadata_interceptors(token: str, caller: str) -> list:
    return [_UnaryUnary(token, caller), _UnaryStream(token, caller)]


def retry_service_config(service: str, methods: Sequence[str], *, max_attempts: int = 4) -> str:
    """A service config that retries the given (idempotent) methods on UNAVAILABLE."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": service, "method": m} for m in methods],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.05s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def internal_channel(
    target: str,
    settings: ServiceSettings,
    *,
    caller: str,
    service_config: str | None = None,
    tls_server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An aio channel to another internal service, carrying this service's credential."""
    opts: list[tuple[str, Any]] = [
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.enable_retries", 1),
        *options,
    ]
    if service_config:
        opts.append(("grpc.service_config", service_config))
    interceptors = metadata_interceptors(settings.internal_token.get_secret_value(), caller)
    if settings.mtls:
        creds = grpc.ssl_channel_credentials(
            root_certificates=read_bytes(settings.tls_ca_file),
            private_key=read_bytes(settings.tls_key_file),
            certificate_chain=read_bytes(settings.tls_cert_file),
        )
        if tls_server_name:
            opts.append(("grpc.ssl_target_name_override", tls_server_name))
        return grpc.aio.secure_channel(target, creds, options=opts, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=opts, interceptors=interceptors)
