"""A model with exit heads, seen as a cascade of stages.

The exits pass attaches heads as ``model.edgevit_exits`` (a ModuleList, so they are saved
with the weights) and their specs as ``model.edgevit_exit_specs``; ``model(x)`` is unchanged
and still returns the final logits. Runtimes cannot stop a graph part-way, so a cascade is
exported as one graph per stage: stage k runs the blocks up to exit k and returns the
features for stage k+1 plus exit k's logits; the last stage returns the final logits. The
host (the device runner) decides between stages whether a sample continues.
"""
from __future__ import annotations

import torch
from torch import nn

from edgevit.adapters import ModelAdapter, adapter_for
from edgevit.exit_heads import HeadSpec, build_head

FINAL_OUTPUT, EXIT_OUTPUT, INPUT = "logits", "exit_logits", "input"


def exit_specs(model: nn.Module) -> list[HeadSpec]:
    return list(getattr(model, "edgevit_exit_specs", []))


def attach_exits(model: nn.Module, specs: list[HeadSpec]) -> nn.Module:
    model.edgevit_exits = nn.ModuleList(build_head(s) for s in specs)
    model.edgevit_exit_specs = list(specs)
    return model


def keep_exits(model: nn.Module, keep: list[int]) -> nn.Module:
    """Only the exits ``keep`` (indices into the attached heads, trained weights kept)."""
    specs, heads = exit_specs(model), list(model.edgevit_exits)
    model.edgevit_exits = nn.ModuleList(heads[k] for k in keep)
    model.edgevit_exit_specs = [specs[k] for k in keep]
    return model


def exit_output_name(index: int) -> str:
    return f"exit{index}_logits"


def feature_names(count: int, stage: int) -> list[str]:
    return [f"features{stage}_{i}" for i in range(count)]


def _flat(h) -> list[torch.Tensor]:
    return list(h) if isinstance(h, tuple) else [h]


def _pack(features: tuple[torch.Tensor, ...]):
    return features[0] if len(features) == 1 else tuple(features)


def forward_all_exits(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every exit's logits and the final logits, no early stop: the reference that each
    exported stage is checked against."""
    adapter = adapter_for(model)
    at = {s.block: i for i, s in enumerate(exit_specs(model))}
    h = adapter.stem(x)
    out: dict[str, torch.Tensor] = {}
    for b in range(len(adapter.blocks())):
        h = adapter.run_block(b, h)
        if b in at:
            out[exit_output_name(at[b])] = model.edgevit_exits[at[b]](adapter.tokens(h))[0]
    out[FINAL_OUTPUT] = adapter.finish(h)
    return out


def block_features(model: nn.Module, x: torch.Tensor, blocks: list[int]) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Tokens after each of ``blocks``, the final logits and the final pre-logits features
    (what exit heads are distilled towards), from one frozen forward pass."""
    adapter = adapter_for(model)
    h = adapter.stem(x)
    tokens = []
    for b in range(len(adapter.blocks())):
        h = adapter.run_block(b, h)
        if b in blocks:
            tokens.append(adapter.tokens(h))
    pre_logits = adapter.pre_logits(h)
    return tokens, adapter.finish(h), pre_logits


class CascadeStage(nn.Module):
    """Blocks [start, end) of the model, then exit ``head`` (or, for the last stage, the
    model's own norm + classifier). Inputs and outputs are flat tensors so the stage
    exports as a plain graph; token-reduced models pass (tokens, sizes) as two tensors."""

    def __init__(self, model: nn.Module, adapter: ModelAdapter, start: int, end: int, head: int | None):
        super().__init__()
        self.model, self.start, self.end, self.head = model, start, end, head
        self._adapter = adapter

    def forward(self, *features: torch.Tensor):
        a = self._adapter
        h = a.stem(features[0]) if self.start == 0 else _pack(features)
        for b in range(self.start, self.end):
            h = a.run_block(b, h)
        if self.head is None:
            return a.finish(h)
        logits = self.model.edgevit_exits[self.head](a.tokens(h))[0]
        return (*_flat(h), logits)


def cascade_stages(model: nn.Module) -> list[CascadeStage]:
    adapter = adapter_for(model)
    bounds = [s.block + 1 for s in exit_specs(model)]
    starts = [0, *bounds]
    ends = [*bounds, len(adapter.blocks())]
    return [CascadeStage(model, adapter, s, e, i if i < len(bounds) else None)
            for i, (s, e) in enumerate(zip(starts, ends))]


def stage_example_inputs(stages: list[CascadeStage], x: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """The inputs each stage sees for ``x`` (to export, count FLOPs and calibrate)."""
    inputs, current = [], (x,)
    with torch.no_grad():
        for stage in stages:
            inputs.append(current)
            out = stage(*current)
            current = tuple(out[:-1]) if isinstance(out, tuple) else ()
    return inputs
