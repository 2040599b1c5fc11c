"""Prometheus metrics for gRPC servers, named as go-grpc-prometheus names them.

Each server gets its own CollectorRegistry (so tests can run several servers in
one process); domain metrics of a service register on the same registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# Latency buckets from 1 ms to 60 s: unary reads sit at the low end, chat
# streams at the high end.
HANDLING_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


@dataclass
class GrpcServerMetrics:
    started: Counter
    handled: Counter
    handling_seconds: Histogram
    msg_received: Counter
    msg_sent: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> GrpcServerMetrics:
        base = ["grpc_type", "grpc_service", "grpc_method"]
        return cls(
            started=Counter(
                "grpc_server_started_total", "Total number of RPCs started on the server.",
                base, registry=registry,
            ),
            handled=Counter(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                [*base, "grpc_code"], registry=registry,
            ),
            handling_seconds=Histogram(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level "
                "handled by the server.",
                base, buckets=HANDLING_BUCKETS, registry=registry,
            ),
            msg_received=Counter(
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                base, registry=registry,
            ),
            msg_sent=Counter(
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                base, registry=registry,
            ),
        )


def start_metrics_server(registry: CollectorRegistry, host: str, port: int):
    """Serve /metrics over HTTP; returns (http server, actual port)."""
    httpd, _thread = start_http_server(port, addr=host, registry=registry)
    return httpd, httpd.server_port
