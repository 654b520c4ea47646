"""FLOPs and parameter counts shared by every pass (FLOPs = 2 x multiply-accumulates)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

aten = torch.ops.aten


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode knows the CUDA attention kernels but not the CPU flash kernel that
    # timm's fused attention dispatches to here; without this, attention counts as zero.
    return sdpa_flop_count(query, key, value)


def count_flops(model: nn.Module, input_size: tuple[int, ...], batch: int = 1) -> int:
    return count_call_flops(model, torch.zeros((batch, *input_size)))


def count_call_flops(fn, *args: Any) -> int:
    """FLOPs of one call, e.g. a cascade stage fed with the previous stage's features."""
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter, torch.no_grad():
        fn(*args)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_stats(model: nn.Module, input_size: tuple[int, ...]) -> dict[str, Any]:
    return {"flops": count_flops(model, input_size), "params": count_params(model)}
