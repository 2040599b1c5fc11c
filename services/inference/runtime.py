"""Start-up of the inference node: checkpoint -> tokenizer -> plan -> rwkv model -> engine.

Every configuration problem (missing file, vocab mismatch, bad strategy, converted file
loaded with another strategy) raises ConfigError here, at start, with a clear message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.inference.checkpoint import CheckpointInfo, inspect_checkpoint
from services.inference.convert import check_converted
from services.inference.engine import Engine, EngineCallbacks, EngineConfig, FinishEvent
from services.inference.gpu import GpuInventory, NvmlCollector
from services.inference.lora import LoraError, load_adapter, merged_load, parse_spec
from services.inference.model_family import family_of, load_batched
from services.inference.planner import (
    ConfigError,
    GpuInfo,
    ModelShape,
    Plan,
    resolve_plan,
)
from services.inference.rwkv7_batched import BatchedRWKV7
from services.inference.rwkv_batched import BatchedRWKV, load_rwkv
from services.inference.safety.model_opinion import (
    ModelSecondOpinion,
    OpinionMetrics,
    opinion_enabled,
)
from services.inference.settings import InferenceSettings
from services.inference.state_cache import StateCache, Tombstones
from services.inference.state_store import (
    RedisStateStore,
    StateTier,
    model_fingerprint,
    vocabulary_digest,
)
from services.inference.tokenizer import Tokenizer, check_vocab, load_tokenizer

log = structlog.get_logger("avatario.inference")


@dataclass
class Runtime:
    settings: InferenceSettings
    info: CheckpointInfo
    tokenizer: Tokenizer
    chat_format: str
    plan: Plan
    gpus: list[GpuInfo]
    engine: Engine
    cache: StateCache
    # Layer 3 of the safety guard; None when off (setting, or a random demo model)
    second_opinion: ModelSecondOpinion | None = None
    # The local cache and the optional shared store (services/inference/state_store.py)
    states: StateTier = None  # type: ignore[assignment]  # None: the local cache alone

    def __post_init__(self) -> None:
        if self.states is None:
            self.states = StateTier(self.cache, None, b"")


class EngineMetrics(EngineCallbacks):
    """Engine hooks -> Prometheus (called on the engine thread; prometheus_client is thread-safe)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tokens = Counter("avatario_inference_tokens_generated_total",
                              "Tokens sampled by the engine.", registry=registry)
        self.prefill_tokens = Counter("avatario_inference_prefill_tokens_total",
                                      "Prompt tokens prefilled (cache misses and new turns).",
                                      registry=registry)
        self.batch = Histogram("avatario_inference_batch_size", "Sequences per decode step.",
                               buckets=(1, 2, 4, 8, 12, 16, 24, 32, 48, 64), registry=registry)
        self.step = Histogram("avatario_inference_step_seconds", "Duration of one decode step.",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                              registry=registry)
        self.ttft = Histogram("avatario_inference_time_to_first_token_seconds",
                              "Time from submit to the first token.",
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32), registry=registry)
        self.prompt_tokens = Counter("avatario_inference_prompt_tokens_total",
                                     "Prompt tokens of requests admitted to a running slot "
                                     "(served from the state cache or prefilled).",
                                     registry=registry)
        self.cached_prompt_tokens = Counter("avatario_inference_cached_prompt_tokens_total",
                                            "Prompt tokens served from the state cache.",
                                            registry=registry)
        self.inter_token = Histogram("avatario_inference_inter_token_latency_seconds",
                                     "Time between two tokens of one sequence while decoding.",
                                     buckets=(0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2,
                                              0.3, 0.5, 1, 2, 5), registry=registry)
        self.warmup = Gauge("avatario_inference_warmup_seconds",
                            "Duration of the start-up warm-up forward (readiness check).",
                            registry=registry)
        self.requests = Counter("avatario_inference_requests_total",
                                "Finished generations by finish reason.", ["finish_reason"],
                                registry=registry)
        self.safety = Counter("avatario_inference_safety_answers_total",
                              "Messages answered or replies rewritten by the safety guard.",
                              ["category"], registry=registry)
        self.safety_decisions = Counter(
            "avatario_inference_safety_decisions_total",
            "Input guard decisions per chat message: the layer that decided (rules, classifier, "
            "model, none), the category (none when passed) and the outcome (answer, "
            "borderline, pass).", ["layer", "category", "decision"], registry=registry)
        self.safety_guard_seconds = Histogram(
            "avatario_inference_safety_guard_seconds",
            "Input guard time per chat message (every layer consulted, layer 3 included).",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry)
        self.safety_opinion = OpinionMetrics(registry)
        self.cache_lookups = Counter(
            "avatario_inference_state_cache_lookups_total",
            "Chat turns by the tier their prompt state came from: local (this replica's "
            "cache), shared (the shared state store), miss (the history was re-prefilled).",
            ["tier"], registry=registry)
        for tier in ("local", "shared", "miss"):
            self.cache_lookups.labels(tier)
        self.store_errors = Counter(
            "avatario_inference_state_store_errors_total",
            "Shared state store calls that failed (the turn re-prefills or the state is not "
            "shared), by operation (get, put, forget) and kind (timeout, connection, error, "
            "backoff: skipped after a recent failure).", ["op", "kind"], registry=registry)
        self.store_seconds_hist = Histogram(
            "avatario_inference_state_store_seconds",
            "Duration of shared state store calls by operation.", ["op"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=registry)
        self.store_rejected_total = Counter(
            "avatario_inference_state_store_rejected_total",
            "Shared entries not used or not written: fingerprint (another model, vocabulary "
            "or placement), format, corrupt, prefix (the history diverged), size (over the "
            "entry cap).", ["reason"], registry=registry)

    def on_step(self, batch_size: int, step_seconds: float) -> None:
        self.batch.observe(batch_size)
        self.step.observe(step_seconds)

    def on_tokens(self, n: int) -> None:
        self.tokens.inc(n)

    def on_prefill(self, n_tokens: int, seconds: float) -> None:
        self.prefill_tokens.inc(n_tokens)

    def on_admit(self, prompt_tokens: int, cached_tokens: int) -> None:
        self.prompt_tokens.inc(prompt_tokens)
        if cached_tokens:
            self.cached_prompt_tokens.inc(cached_tokens)

    def on_inter_token(self, gaps_s: Sequence[float]) -> None:
        for g in gaps_s:
            self.inter_token.observe(g)

    def on_warmup(self, seconds: float) -> None:
        self.warmup.set(seconds)

    def on_cache_lookup(self, tier: str) -> None:
        self.cache_lookups.labels(tier).inc()

    # StoreMetrics (services.inference.state_store)
    def store_seconds(self, op: str, seconds: float) -> None:
        self.store_seconds_hist.labels(op).observe(seconds)

    def store_error(self, op: str, kind: str) -> None:
        self.store_errors.labels(op, kind).inc()

    def store_rejected(self, reason: str) -> None:
        self.store_rejected_total.labels(reason).inc()

    def on_finish(self, event: FinishEvent) -> None:
        self.requests.labels(event.reason).inc()
        if event.completion_tokens:
            self.ttft.observe(event.ttft_s)


class RuntimeCollector(Collector):
    """Queue, running sequences, cache and placement, read at scrape time."""

    def __init__(self, holder) -> None:
        self._holder = holder

    def collect(self):
        rt: Runtime | None = self._holder()
        if rt is None:
            return
        cfg = rt.engine.config
        gauges = [
            ("avatario_inference_queue_depth", "Requests waiting for a running slot.",
             rt.engine.queue_depth()),
            ("avatario_inference_queue_capacity", "Maximum waiting requests.", cfg.max_queue),
            ("avatario_inference_running_sequences", "Sequences prefilling or decoding.",
             rt.engine.running_count()),
            ("avatario_inference_max_running_sequences", "Maximum running sequences.",
             cfg.max_running),
        ]
        for name, doc, value in gauges:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g
        s = rt.cache.stats()
        for name, doc, value in [
            ("avatario_inference_state_cache_bytes", "Bytes held by cached states.", s.used_bytes),
            ("avatario_inference_state_cache_budget_bytes", "State cache budget.", s.budget_bytes),
            ("avatario_inference_state_cache_entries", "Cached conversations.", s.entries),
            ("avatario_inference_state_tombstones",
             "Erased conversation ids this replica remembers (their turns are refused).",
             s.tombstones),
        ]:
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g
        for name, doc, value in [
            ("avatario_inference_state_cache_evictions", "Entries evicted for space.", s.evictions),
            ("avatario_inference_state_cache_hits", "Resumed conversations.", s.hits),
            ("avatario_inference_state_cache_misses", "Conversations re-prefilled.", s.misses),
        ]:
            from prometheus_client.core import CounterMetricFamily

            c = CounterMetricFamily(name, doc)
            c.add_metric([], value)
            yield c
        placement = GaugeMetricFamily("avatario_inference_placement_bytes",
                                      "Weight bytes per device segment of the strategy plan.",
                                      labels=["device", "dtype", "first_layer", "layers"])
        for seg in rt.plan.segments:
            placement.add_metric([seg.device, seg.dtype, str(seg.first_layer), str(seg.layer_count)],
                                 seg.bytes)
        yield placement
        info = GaugeMetricFamily("avatario_inference_model_info", "The loaded model (value 1).",
                                 labels=["strategy", "n_layer", "n_embd", "vocab_size", "chat_format"])
        info.add_metric([rt.plan.strategy, str(rt.info.n_layer), str(rt.info.n_embd),
                         str(rt.info.vocab_size), rt.chat_format], 1)
        yield info


def register_metrics(registry: CollectorRegistry, holder, inventory: GpuInventory) -> EngineMetrics:
    metrics = EngineMetrics(registry)
    registry.register(RuntimeCollector(holder))
    registry.register(NvmlCollector(inventory))
    up = Gauge("avatario_inference_model_loaded", "1 once the model is loaded and serving.",
               registry=registry)
    up.set_function(lambda: 1.0 if holder() is not None else 0.0)
    return metrics


def model_second_opinion(settings: InferenceSettings, engine: Engine, tokenizer: Tokenizer,
                         metrics: EngineCallbacks | None = None) -> ModelSecondOpinion | None:
    """The served model as the safety guard's second opinion (layer 3), or None when
    `safety_model_opinion` is off, or auto with a random checkpoint (the devstack's demo
    model: `checkpoint.is_random_checkpoint`)."""
    mode = settings.safety_model_opinion
    if not opinion_enabled(mode, settings.model_path):
        log.info("inference.safety_opinion", enabled=False, mode=mode)
        return None
    try:
        opinion = ModelSecondOpinion(
            engine, tokenizer, tokenizer.chat_format,
            deadline_s=settings.safety_model_opinion_deadline_s,
            metrics=metrics.safety_opinion if isinstance(metrics, EngineMetrics) else None)
    except ValueError as exc:
        raise ConfigError(f"safety model opinion: {exc}") from exc
    log.info("inference.safety_opinion", enabled=True, mode=mode,
             deadline_s=opinion.deadline_s, label_token_ids=opinion.token_ids)
    return opinion


def _load_model(settings: InferenceSettings, path, strategy: str, info: CheckpointInfo):
    """The rwkv model, with the LoRA adapter of `settings.lora` merged before the package
    reads the weights (services/inference/lora.py)."""
    if not settings.lora:
        return load_rwkv(path, strategy)
    try:
        adapter_path, alpha = parse_spec(settings.lora)
        if info.converted_strategy is not None:
            raise LoraError(f"{path} is pre-converted ({info.converted_strategy!r}); a LoRA "
                            "adapter merges into the raw .pth only")
        adapter = load_adapter(adapter_path)
        with merged_load(path, adapter, alpha):
            model = load_rwkv(path, strategy)
    except LoraError as exc:
        raise ConfigError(f"lora: {exc}") from exc
    log.info("inference.lora", adapter=str(adapter_path), rank=adapter.rank,
             alpha=adapter.alpha if alpha is None else alpha, matrices=len(adapter.tensors) // 2)
    return model


def load_runtime(settings: InferenceSettings, inventory: GpuInventory,
                 metrics: EngineCallbacks | None = None) -> Runtime:
    """Blocking (seconds to minutes for big models): run it in a thread."""
    path = settings.model_path
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    info = inspect_checkpoint(path)
    # RWKV-4 or RWKV-7, told by the keys before the rwkv package is imported (one generation
    # per process: services/inference/model_family.py); RWKV-5/6 refused by name
    family = family_of(info)
    if family.generation == 7 and settings.lora:
        raise ConfigError("lora: adapters merge into RWKV-4 checkpoints only; this is an "
                          "RWKV-7 checkpoint")
    tokenizer = load_tokenizer(
        settings.tokenizer,
        chat_format=settings.chat_format or family.chat_format or None)  # type: ignore[arg-type]
    check_vocab(tokenizer, info.vocab_size)
    gpus = inventory.gpus()
    plan = resolve_plan(ModelShape.from_info(info), gpus, explicit=settings.strategy or None,
                        converted_strategy=info.converted_strategy,
                        cpu_first_layers=settings.cpu_first_layers)
    if info.converted_strategy is not None:
        check_converted(path, plan.strategy)
    log.info("inference.plan", strategy=plan.strategy, reason=plan.reason,
             gpus=len(gpus), plan="\n" + plan.describe())
    batched = load_batched(path, family, plan.strategy,
                           onednn=None if settings.onednn else False,
                           packed_weights=settings.cpu_packed_weights,
                           load_package_model=lambda p, s: _load_model(settings, p, s, info))
    model = batched.model
    log.info("inference.batched_decode", family=family.name, batched=batched.batched,
             fallback_reason=batched.fallback_reason, onednn=batched.onednn,
             packed_weights=batched.packed_weights, extra_host_bytes=batched.extra_bytes)
    cache = StateCache(settings.state_cache_bytes, Tombstones(settings.state_tombstone_s))
    engine = Engine(
        batched, tokenizer, cache=cache, callbacks=metrics,
        config=EngineConfig(
            max_running=settings.max_batch_size, max_queue=settings.max_queue,
            prefill_chunk_len=settings.prefill_chunk_len,
            prefill_tokens_per_step=settings.prefill_tokens_per_step,
            max_tokens_limit=settings.max_tokens_limit,
            max_prompt_tokens=settings.max_prompt_tokens,
            reasoning_block=family.reasoning_block, cuda_graphs=settings.cuda_graphs,
        ),
    )
    # Readiness: the node reports SERVING only once this returns, so the warm-up forward has
    # run; a failure stops the node with a clear error (main prints it and exits).
    try:
        seconds = engine.warmup()
    except Exception as exc:
        raise ConfigError(f"model warm-up failed (readiness check, a 1-token forward with "
                          f"strategy {plan.strategy!r}): {exc}") from exc
    if isinstance(metrics, EngineMetrics):
        metrics.on_warmup(seconds)
    opinion = model_second_opinion(settings, engine, tokenizer, metrics)  # ConfigError first
    states = state_tier(settings, cache, model, batched, tokenizer, plan.strategy, metrics)
    engine.start()
    return Runtime(settings, info, tokenizer, tokenizer.chat_format, plan, gpus, engine, cache,
                   second_opinion=opinion, states=states)


def state_tier(settings: InferenceSettings, cache: StateCache, model: object,
               batched: BatchedRWKV | BatchedRWKV7, tokenizer: Tokenizer, strategy: str,
               metrics: EngineCallbacks | None = None) -> StateTier:
    """The local cache with the shared store when `state_store_url` is set. The store is
    connected lazily: a store that is down at start degrades like one that goes down later."""
    url = settings.state_store_url.get_secret_value() if settings.state_store_url else ""
    store = None
    fingerprint = b""
    if url:
        placement = [(str(t.device), str(t.dtype), t.numel()) for t in batched.zero_state()]
        weights = batched.z if isinstance(batched, BatchedRWKV7) else getattr(model, "w", {})
        fingerprint = model_fingerprint(weights, vocabulary_digest(tokenizer),
                                        placement, strategy)
        store = RedisStateStore(
            url, prefix=settings.state_store_prefix, ttl_s=settings.state_store_ttl_s,
            tombstone_s=settings.state_tombstone_s, timeout_s=settings.state_store_timeout_s,
            retry_s=settings.state_store_retry_s)
        log.info("inference.state_store", prefix=settings.state_store_prefix,
                 fingerprint=fingerprint.hex(), ttl_s=settings.state_store_ttl_s,
                 max_entry_bytes=settings.state_store_max_entry_bytes)
    return StateTier(cache, store, fingerprint, max_entry_bytes=settings.state_store_max_entry_bytes,
                     metrics=metrics if isinstance(metrics, EngineMetrics) else None)
