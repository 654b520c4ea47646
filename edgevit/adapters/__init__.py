"""Model-family adapters: the one place that knows timm's module layout.

Passes ask an adapter (``adapter_for(model)``) for blocks, per-head and per-channel
tensors, norm->Linear pairs, the token hook and the forward as steps; they never reach
into timm classes themselves, so a new family is one new module here registering its timm
class. Module swaps go through ``swap_module`` so they can be undone.
"""
from edgevit.adapters.base import (BLOCK_LINEARS, CAPABILITIES, EXIT_TOKENS, GRID_TOKEN_HOOK, HEAD_SURGERY, MLP_SURGERY, REPQ_PAIRS, STAGES,
                                   TOKEN_HOOK, BlockRef, HeadLayout, ModelAdapter, adapter_for, register_adapter,
                                   registered_adapters, resolve_class, swap_module)
from edgevit.adapters.eva import EvaAdapter
from edgevit.adapters.generic import GenericTimmAdapter
from edgevit.adapters.relpos import RelPosVitAdapter
from edgevit.adapters.swin import SwinAdapter, SwinV2Adapter
from edgevit.adapters.vit import VitAdapter
from edgevit.adapters.check import check_passes_supported

__all__ = [
    "BLOCK_LINEARS", "CAPABILITIES", "EXIT_TOKENS", "GRID_TOKEN_HOOK", "HEAD_SURGERY", "MLP_SURGERY", "REPQ_PAIRS", "STAGES", "TOKEN_HOOK",
    "BlockRef", "EvaAdapter", "GenericTimmAdapter", "HeadLayout", "ModelAdapter", "RelPosVitAdapter", "SwinAdapter",
    "SwinV2Adapter", "VitAdapter", "adapter_for", "check_passes_supported", "register_adapter", "registered_adapters",
    "resolve_class", "swap_module",
]
