"""The inference node: `python -m services.inference serve [--lora PATH[:ALPHA]]`.

The gRPC server starts at once with health NOT_SERVING; the model loads in a worker
thread (the event loop never blocks on torch); health turns SERVING when the engine
runs. A configuration error stops the process with a clear message.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import structlog

from avatario.inference.v1 import inference_pb2, inference_pb2_grpc
from services.common.logs import configure_logging
from services.common.server import Registration, Server, create_server, serve
from services.common.settings import load_settings
from services.inference.gpu import GpuInventory
from services.inference.planner import ConfigError
from services.inference.runtime import Runtime, load_runtime, register_metrics
from services.inference.safety import guard_from_config
from services.inference.safety.classifier import Classifier
from services.inference.safety.layered import LayeredGuard
from services.inference.servicer import InferenceServicer
from services.inference.settings import InferenceSettings

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
log = structlog.get_logger("avatario.inference")


class InferenceNode:
    """The server and the runtime it loads once started."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self.runtime: Runtime | None = None
        self.inventory = GpuInventory()
        self.server: Server | None = None
        self.port = 0

    async def build(self) -> tuple[Server, int]:
        self.guard = build_guard(self.settings)  # ConfigError early
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
        self.metrics = register_metrics(registry, lambda: self.runtime, self.inventory)
        servicer = InferenceServicer(lambda: self.runtime, self.guard, self.metrics)
        self.server, self.port = await create_server(
            name="inference", settings=self.settings, registry=registry,
            services=[Registration(inference_pb2_grpc.add_InferenceServiceServicer_to_server,
                                   servicer, SERVICE_NAME)])
        self.server.on_stop.append(self._stop_engine)
        return self.server, self.port

    async def load(self) -> None:
        self.runtime = await asyncio.to_thread(load_runtime, self.settings, self.inventory,
                                               self.metrics)
        # Layer 3 of the input guard, when the runtime offers one (a real model, not the demo).
        self.guard.attach_second_opinion(getattr(self.runtime, "second_opinion", None))

    async def _stop_engine(self) -> None:
        if self.runtime is not None:
            await self.runtime.engine.astop(grace_s=0.0)
            await self.runtime.states.aclose()  # pending shared-store writes, then close
        self.inventory.close()


def build_guard(settings: InferenceSettings) -> LayeredGuard:
    """The layered input guard: rules, the classifier (loaded and checked here, at start)."""
    rules = guard_from_config(settings.safety_country)
    classifier = (Classifier.load(settings.safety_classifier_dir)
                  if settings.safety_classifier else None)
    log.info("inference.safety_guard", classifier=classifier is not None,
             thresholds={c: (t.answer, t.borderline) for c, t in classifier.thresholds.items()}
             if classifier else None)
    return LayeredGuard(rules, classifier, model_threshold=settings.safety_model_threshold)


async def build_server(settings: InferenceSettings, *, load: bool = True) -> InferenceNode:
    """For tests: a node on settings.port (0 = any), started, loaded, SERVING."""
    node = InferenceNode(settings)
    server, _ = await node.build()
    await server.start()
    if load:
        try:
            await node.load()
        except BaseException:
            await server.stop(0)
            raise
        await server.set_serving()
    return node


async def _serve(settings: InferenceSettings) -> None:
    node = InferenceNode(settings)
    server, port = await node.build()
    log.info("inference.listening", port=port)
    await serve(server, ready=node.load)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    if command != "serve":
        print(f"unknown command {command!r}; use: serve [--lora PATH[:ALPHA]]", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m services.inference serve")
    parser.add_argument("--lora", default=None, metavar="PATH[:ALPHA]",
                        help="LoRA adapter merged at load (overrides AVATARIO_INFERENCE_LORA)")
    options = parser.parse_args(args[1:])
    overrides = {"lora": options.lora} if options.lora is not None else {}
    settings = load_settings(InferenceSettings, service="inference", **overrides)  # once
    configure_logging(settings.log_level, json=settings.log_json, service="inference")
    try:
        asyncio.run(_serve(settings))
    except ConfigError as exc:
        log.error("inference.config_error", error=str(exc))
        print(f"inference: configuration error: {exc}", file=sys.stderr)
        return 3
    return 0
