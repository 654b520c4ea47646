"""Compression passes.

Each pass kind is declared, without torch, in ``edgevit.passes.specs`` (config, needs,
export forms, order rules) and implemented in a module of this package, imported only when
the pass runs (``specs.pass_impl``). Importing this package imports no pass.
"""
from edgevit.passes.base import PassConfig, PassContext, PassRecord

__all__ = ["PassConfig", "PassContext", "PassRecord"]
