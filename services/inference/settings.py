"""Inference node settings (env prefix AVATARIO_INFERENCE_)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class InferenceSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AVATARIO_INFERENCE_", extra="ignore",
                                      populate_by_name=True)

    port: int = Field(50054, ge=0, le=65535)
    # Overload admission: RPCs in flight before RESOURCE_EXHAUSTED + RetryInfo
    # (measured: bench/bench_load.py; above max_batch_size + max_queue: the engine answers first).
    max_inflight_rpcs: int = Field(128, ge=0, le=100_000, description="0 = no cap.")
    metrics_port: int | None = Field(9104, ge=0, le=65535)
    model_path: Path = Field(description="RWKV-4 .pth checkpoint (raw or pre-converted) or "
                             "RWKV-7 .pth (x070: World, G1); the generation is read from its keys.")
    tokenizer: str = Field(
        "world", description='Path to a tokenizers JSON (Raven: 20B_tokenizer.json) or "world".'
    )
    lora: str = Field(
        "", description="LoRA adapter merged into the raw checkpoint at load: path[:alpha] "
        "(alpha: the LoRA alpha, default the trained one; services/inference/lora.py).")
    chat_format: str = Field("", description='"raven", "world" or "g1"; empty: "g1" for an '
                             'RWKV-7 checkpoint, else from the tokenizer.')
    strategy: str = Field("", description="rwkv strategy string; empty: the planner decides.")
    cpu_first_layers: int = Field(0, ge=0, description="Planner option: first N layers on CPU.")
    max_batch_size: int = Field(16, ge=1, le=256, description="Sequences decoded together.")
    max_queue: int = Field(64, ge=0, le=10_000, description="Requests waiting for a slot.")
    prefill_chunk_len: int = Field(256, ge=1)
    prefill_tokens_per_step: int = Field(512, ge=1)
    max_tokens_limit: int = Field(1024, ge=1, description="Upper bound of a request's max_tokens.")
    default_max_tokens: int = Field(300, ge=1)
    max_prompt_tokens: int = Field(16384, ge=256)
    max_history_turns: int = Field(200, ge=0)
    state_cache_bytes: int = Field(1 << 30, ge=0, description="Conversation state cache budget.")
    # The shared state tier (services/inference/state_store.py): empty = off, as before.
    state_store_url: SecretStr | None = Field(
        None, description="redis:// or rediss:// URL of the shared conversation state store; "
        "empty: no shared tier.")
    state_store_prefix: str = Field("avatario:inference:", min_length=1,
                                    description="Key prefix in the shared store.")
    state_store_ttl_s: float = Field(86400.0, gt=0, description="Lifetime of a shared entry.")
    state_store_timeout_s: float = Field(
        0.25, gt=0, le=10, description="Connect/read timeout of one shared-store call; past it "
        "the turn re-prefills.")
    state_store_retry_s: float = Field(
        2.0, ge=0, le=300, description="After a shared-store failure, skip it for this long.")
    state_store_max_entry_bytes: int = Field(
        64 << 20, ge=1024, description="Largest state written to the shared store.")
    state_tombstone_s: float = Field(
        3600.0, gt=0, description="How long an erased conversation's id is remembered (its "
        "turns refused, its state never stored again); longer than any chat lasts.")
    onednn: bool = Field(
        True, description="CPU fp32 products through oneDNN (checked at start); false: BLAS.")
    cpu_packed_weights: bool = Field(
        True, description="CPU fp32 layers: keep a oneDNN-packed copy of every matrix for "
        "batched decode (10-15% faster batches; as much host memory again as those matrices).")
    cuda_graphs: bool = Field(
        True, description="GPU nodes: capture each batch-size bucket's decode step in a CUDA "
        "graph (one device holding every layer and the head); false: the same steps eagerly.")
    safety_country: str = Field("US", description="Emergency/crisis numbers used by the guard.")
    safety_classifier: bool = Field(
        True, description="Layer 2 of the input guard (the trained classifier); false: rules only.")
    safety_classifier_dir: Path | None = Field(
        None, description="Folder with classifier.json + classifier.npz; empty: the built-in model.")
    safety_model_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Layer 3: a second-opinion score at or above this turns a "
        "borderline message into the fixed answer.")
    # Layer 3 of the safety guard (services/inference/safety/model_opinion.py): the served
    # model scores borderline messages. auto = on unless the checkpoint is marked as a random
    # one by services.inference.checkpoint.build_random_checkpoint (the devstack demo model).
    safety_model_opinion: Literal["off", "on", "auto"] = Field(
        "auto", description="off | on | auto (on unless the checkpoint is a random demo model).")
    safety_model_opinion_deadline_s: float = Field(
        2.0, gt=0, le=60, description="Deadline of one second opinion; past it, the guard "
        "decides without it.")
    shutdown_grace_s: float = Field(30.0, ge=0)
