"""What a bench section gets, and the registry of sections."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgevit.bench.timing import load_average

SECTIONS: dict[str, tuple[str, str, int, Callable[["BenchContext"], dict[str, Any]]]] = {}
# the shared short fine-tune of the pass sections (pruning, tokens, swin_tokens): one epoch
# of 5000 seeded CIFAR-10 training images, distilled, so their "after fine-tune" columns compare
FINETUNE = {"epochs": 1, "lr": 1e-4, "batch_size": 64, "max_images": 5000}


def section(name: str, title: str, description: str, cap_s: int):
    def register(fn):
        SECTIONS[name] = (title, description, cap_s, fn)
        return fn

    return register


@dataclass
class BenchContext:
    shared: Path
    work: Path
    cap_s: int
    started: float = field(default_factory=time.monotonic)
    capped: bool = False
    loads: list[float] = field(default_factory=list)
    recipes: list[str] | None = None  # --recipes: restrict the recipe sections to these
    models: list[str] | None = None  # --models: pairs "reference=224-model" or reference folder names
    previous: dict[str, Any] | None = None  # this section as bench.json last published it (None: never run)

    def over_cap(self) -> bool:
        """True once the section's wall-time cap is spent; the section then stops adding rows."""
        self.loads.append(load_average())
        if time.monotonic() - self.started > self.cap_s:
            self.capped = True
        return self.capped
