"""Every bench section, registered on import (order = run order)."""
from edgevit.bench import runtimes  # noqa: F401  (order = run order)
from edgevit.bench import tokens  # noqa: F401
from edgevit.bench import swin_tokens  # noqa: F401
from edgevit.bench import pruning  # noqa: F401
from edgevit.bench import quantization  # noqa: F401
from edgevit.bench import nncf_peer  # noqa: F401
from edgevit.bench import targets  # noqa: F401
from edgevit.bench import exits  # noqa: F401
from edgevit.bench import litert  # noqa: F401
from edgevit.bench import pareto  # noqa: F401
from edgevit.bench import stacks  # noqa: F401
from edgevit.bench import tune  # noqa: F401
from edgevit.bench.context import SECTIONS, BenchContext

__all__ = ["SECTIONS", "BenchContext"]
