"""Host side of profiling: send the runner + a bundle to a target, run it, read its JSON."""
from edgevit.profiling.transport import LocalTransport, Transport, transport_for
from edgevit.profiling.runner_module import runner_module

__all__ = ["LocalTransport", "Transport", "transport_for", "runner_module"]
