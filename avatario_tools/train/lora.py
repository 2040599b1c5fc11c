"""LoRA on the trainer's RWKV-4 module: y = W x + (alpha / rank) * B (A x), W frozen.

A starts random (Kaiming-uniform, seeded), B at zero, so training starts from the base model.
The adapter file format and the merge live in services.inference.lora (the node reads them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avatario_tools.train.config import LoraConfig
from avatario_tools.train.model import RWKV4


class LoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, gen: torch.Generator) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5), generator=gen)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.linear(F.linear(x, self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return self.base(x) + self.scale * low


def add_lora(model: RWKV4, cfg: LoraConfig, seed: int) -> dict[str, LoraLinear]:
    """Freeze the model and wrap each targeted matrix; returns {".pth weight stem": module}
    (e.g. "blocks.3.att.key")."""
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    wrapped: dict[str, LoraLinear] = {}
    for i, block in enumerate(model.blocks):
        for target in cfg.targets:
            part, name = target.split(".")
            owner = getattr(block, part)
            lin = LoraLinear(getattr(owner, name), cfg.rank, cfg.alpha, gen)
            lin.to(getattr(owner, name).weight.device)
            setattr(owner, name, lin)
            wrapped[f"blocks.{i}.{target}"] = lin
    return wrapped


def adapter_tensors(wrapped: dict[str, LoraLinear]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for stem, lin in wrapped.items():
        out[stem + ".lora_A"] = lin.lora_A.detach()
        out[stem + ".lora_B"] = lin.lora_B.detach()
    return out


def lora_parameters(wrapped: dict[str, LoraLinear]) -> list[nn.Parameter]:
    return [p for lin in wrapped.values() for p in (lin.lora_A, lin.lora_B)]
