"""Layer-wise Relevance Propagation for timm ViT/DeiT and Swin, AttnLRP-style.

Relevance is computed as input x modified-gradient, with the LRP rules put into the
backward pass while the forward values stay those of the model:
- Linear: epsilon rule (the backward divides by z + eps*sign(z) where z is the output);
- LayerNorm: identity rule (the normalising std is treated as a constant);
- GELU: identity rule (y = x * [gelu(x)/x] with the ratio constant);
- attention products q.k^T and attn.v: uniform rule (each operand gets half);
- softmax: its own gradient (the AttnLRP softmax rule in gradient form).
The rules apply to whatever model runs inside ``lrp_rules()`` (a TorchFunctionMode), so no
timm forward is copied; fused attention is switched off for the duration because its
kernel hides the products the rules act on.

The per-layer score is sum |W * dR/dW| over the calibration images, normalised to sum 1:
unlike the signed total, which LRP conserves layer by layer (every layer would score the
same), it measures how much of the relevance depends on that layer's individual weights,
which is what quantization noise perturbs.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

EPSILON = 1e-6


class _EpsilonLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        z = F.linear(x, weight, bias)
        ctx.save_for_backward(x, weight, z)
        ctx.has_bias = bias is not None
        return z

    @staticmethod
    def backward(ctx, grad):
        x, weight, z = ctx.saved_tensors
        stabiliser = z / (z + EPSILON * torch.where(z >= 0, 1.0, -1.0))
        g = grad * stabiliser
        grad_x = g @ weight
        grad_w = g.reshape(-1, g.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        grad_b = g.reshape(-1, g.shape[-1]).sum(0) if ctx.has_bias else None
        return grad_x, grad_w, grad_b


def _is_activation(t) -> bool:
    return isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter)


class _LrpRules(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            return _EpsilonLinear.apply(x, weight, bias)
        if func in (torch.matmul, torch.Tensor.__matmul__, torch.bmm) and all(_is_activation(a) for a in args[:2]):
            a, b = args[0], args[1]
            return 0.5 * (func(a, b.detach()) + func(a.detach(), b))
        if func is F.layer_norm:
            x, shape = args[0], args[1]
            weight = args[2] if len(args) > 2 else kwargs.get("weight")
            bias = args[3] if len(args) > 3 else kwargs.get("bias")
            eps = args[4] if len(args) > 4 else kwargs.get("eps", 1e-5)
            dims = tuple(range(-len(shape), 0))
            centred = x - x.mean(dims, keepdim=True)
            y = centred / (centred.pow(2).mean(dims, keepdim=True) + eps).sqrt().detach()
            return y * weight + bias if weight is not None else y
        if func is F.gelu:
            x = args[0]
            y = func(*args, **kwargs)
            ratio = torch.where(x == 0, torch.zeros_like(x), y / torch.where(x == 0, torch.ones_like(x), x))
            return x * ratio.detach()
        return func(*args, **kwargs)


@contextlib.contextmanager
def lrp_rules(model: nn.Module) -> Iterator[None]:
    fused = [(m, m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")]
    for m, _ in fused:
        m.fused_attn = False
    try:
        with _LrpRules():
            yield
    finally:
        for m, flag in fused:
            m.fused_attn = flag


def linear_relevance(model: nn.Module, images: torch.Tensor, layers: dict[str, nn.Linear], batch_size: int = 16) -> dict[str, float]:
    """Normalised sum |W * dR/dW| per named Linear; R = the predicted class's logit."""
    totals = dict.fromkeys(layers, 0.0)
    was_training = model.training
    model.eval()
    params = {name: layer.weight for name, layer in layers.items()}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    for w in params.values():
        w.requires_grad_(True)
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            with lrp_rules(model):
                logits = model(x)
                target = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            grads = torch.autograd.grad(target, list(params.values()))
            for (name, w), g in zip(params.items(), grads):
                totals[name] += float((w.detach() * g).abs().sum())
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    norm = sum(totals.values()) or 1.0
    return {name: v / norm for name, v in totals.items()}
