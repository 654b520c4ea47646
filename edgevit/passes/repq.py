"""RepQ-style reparameterisation of post-LayerNorm activations.

The activations after a LayerNorm have a few channels with far larger ranges than the
rest, which per-tensor int8 quantization handles badly. A per-channel factor f_c folded
into the LayerNorm affine (gamma, beta times f) and divided out of the next Linear's
input columns leaves the fp32 function unchanged but evens the channel ranges, so the
runtime's per-tensor activation quantization behaves like a per-channel one.
f_c = (median range / range_c) ** strength, clipped to [1/16, 16].
"""
from __future__ import annotations

import torch
from torch import nn

from edgevit.adapters import adapter_for


def ln_linear_pairs(model: nn.Module) -> list[tuple[str, nn.LayerNorm, tuple[nn.Linear, ...]]]:
    """(label, LayerNorm, the Linear layers reading its output): the family's adapter knows."""
    return adapter_for(model).repq_pairs()


@torch.no_grad()
def reparameterize(model: nn.Module, images: torch.Tensor, strength: float = 0.5) -> dict[str, dict[str, float]]:
    pairs = ln_linear_pairs(model)
    ranges: dict[str, torch.Tensor] = {}
    hooks = []
    for name, norm, _ in pairs:
        def hook(module, inputs, output, name=name):
            r = output.detach().abs().reshape(-1, output.shape[-1]).amax(0)
            ranges[name] = torch.maximum(ranges[name], r) if name in ranges else r
        hooks.append(norm.register_forward_hook(hook))
    try:
        for start in range(0, len(images), 32):
            model(images[start:start + 32])
    finally:
        for h in hooks:
            h.remove()
    summary = {}
    for name, norm, linears in pairs:
        r = ranges[name].clamp_min(1e-6)
        factor = ((r.median() / r) ** strength).clamp(1 / 16, 16)
        norm.weight.mul_(factor)
        norm.bias.mul_(factor)
        for linear in linears:
            linear.weight.div_(factor)
        summary[name] = {"range_spread_before": float(r.max() / r.median()),
                         "range_spread_after": float((r * factor).max() / (r * factor).median())}
    return summary
