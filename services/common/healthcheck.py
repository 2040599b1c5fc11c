"""`python -m services.common.healthcheck [TLS options] HOST:PORT [SERVICE]`: exit 0 when SERVING.

For container health checks (docker compose), Kubernetes exec probes where the
port speaks TLS (kubelet's native gRPC probes cannot), and scripts:

    --tls --ca-file CA [--server-name NAME]                 server-authenticated TLS
    --cert-file CRT --key-file KEY --ca-file CA [...]       mutual TLS (internal ports)
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(target: str, *, tls: bool = False, ca_file: str | None = None,
             cert_file: str | None = None, key_file: str | None = None,
             server_name: str | None = None) -> grpc.Channel:
    if not (tls or ca_file or cert_file):
        return grpc.insecure_channel(target)

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as fh:
            return fh.read()

    creds = grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(target, creds, options=options)


def check(target: str, service: str = "", timeout: float = 3.0, **tls: object) -> bool:
    with _channel(target, **tls) as channel:  # type: ignore[arg-type]
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING


async def wait_serving(target: str, *, timeout: float, service: str = "") -> bool:
    """Poll the health service until SERVING or `timeout` seconds pass."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m services.common.healthcheck")
    parser.add_argument("target", help="HOST:PORT")
    parser.add_argument("service", nargs="?", default="", help="service name ('' = whole server)")
    parser.add_argument("--tls", action="store_true", help="the port speaks TLS")
    parser.add_argument("--ca-file")
    parser.add_argument("--cert-file", help="client certificate (mutual TLS)")
    parser.add_argument("--key-file", help="client key (mutual TLS)")
    parser.add_argument("--server-name", help="name to verify the server certificate against")
    parser.add_argument("--timeout", type=float, default=3.0)
    a = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if bool(a.cert_file) != bool(a.key_file):
        parser.error("--cert-file and --key-file go together")
    ok = check(a.target, a.service, a.timeout, tls=a.tls, ca_file=a.ca_file,
               cert_file=a.cert_file, key_file=a.key_file, server_name=a.server_name)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
