"""Which Linear layers the lowering can address in the exported graph, learnt by running the
model, so the quantize plan knows before export (no family knowledge needed).

The ONNX lowering finds a Linear through the module path the exporter stores on its MatMul
(``edgevit.exporters.quantize_onnx.linear_nodes``). It cannot find:
- a Linear that runs on constants (Swin v2 ``cpb_mlp``, the relative-position MLP of
  ``vit_relpos``): the exporter folds it away;
- a Linear whose weight is used some other way than by its own forward or by ``F.linear``
  in its parent's forward.
A Linear whose parent applies its weight with ``F.linear`` (Swin v2 and Eva qkv, with a
concatenated q/v bias) is found: the exporter names that MatMul's weight after it.
Two forwards on different random images tell these apart."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

NOT_CALLED = "its weight is not applied by F.linear in its own or its parent's forward"
CONSTANT = "runs on constants (folded at export)"


class _FunctionalUse(TorchFunctionMode):
    """Records which parent module's forward applied a watched weight with F.linear."""

    def __init__(self, watched: dict[int, str]):
        super().__init__()
        self.watched, self.stack, self.used = watched, [], {}

    def enter(self, parent: str) -> None:
        self.stack.append(parent)

    def leave(self) -> None:
        self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            name = self.watched.get(id(weight))
            if name is not None and self.stack:
                self.used.setdefault(name, set()).add(self.stack[-1])
        return func(*args, **kwargs)


def unlowerable_linears(model: nn.Module, layers: dict[str, nn.Linear], input_size) -> dict[str, str]:
    """name -> why the lowering cannot find it, for the layers of ``layers`` that it cannot."""
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    hooks = [m.register_forward_hook(lambda _m, args, _out, name=name: inputs[name].append(args[0].detach()))
             for name, m in layers.items()]
    mode = _FunctionalUse({id(m.weight): name for name, m in layers.items()})
    parents = {name.rpartition(".")[0] for name in layers}
    for parent in parents:
        module = model.get_submodule(parent)
        hooks.append(module.register_forward_pre_hook(lambda *_, p=parent: mode.enter(p)))
        hooks.append(module.register_forward_hook(lambda *_: mode.leave()))  # hooks return None: outputs untouched
    generator = torch.Generator().manual_seed(0)  # its own generator: the run's seeded stream is untouched
    try:
        with torch.no_grad(), mode:
            for _ in range(2):
                model(torch.randn(1, *input_size, generator=generator))
    finally:
        for h in hooks:
            h.remove()
    reasons = {}
    for name, seen in inputs.items():
        half = len(seen) // 2
        if not seen and mode.used.get(name) != {name.rpartition(".")[0]}:
            reasons[name] = NOT_CALLED
        elif seen and len(seen) % 2 == 0 and all(torch.equal(a, b) for a, b in zip(seen[:half], seen[half:])):
            reasons[name] = CONSTANT
    return reasons
