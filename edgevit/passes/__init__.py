"""Compression passes. Each pass module registers itself in ``base.PASS_REGISTRY``."""
from edgevit.passes import exits as _exits, prune as _prune, quantize as _quantize, tokens as _tokens  # noqa: F401  (register their kinds)
from edgevit.passes.base import PASS_REGISTRY, Pass, PassConfig, PassContext, PassRecord, register_pass

__all__ = ["PASS_REGISTRY", "Pass", "PassConfig", "PassContext", "PassRecord", "register_pass"]
