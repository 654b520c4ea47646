"""Top-1 accuracy of several predictors (PyTorch, artifacts) over one pass of an image folder."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from edgevit import progress
from edgevit.data import ImageFolder, image_batches, label_map
from edgevit.evaluation import Top1Counter

Predictor = Callable[[torch.Tensor], np.ndarray]


def torch_predictor(model: torch.nn.Module) -> Predictor:
    def predict(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model(x).numpy()

    return predict


def artifact_predictor(session: Any, output: str | None = None) -> Predictor:
    """Wrap a runner session (runtimes/runner.py); ``output`` picks the logits output."""
    input_name = session.inputs[0][0]

    def predict(x: torch.Tensor) -> np.ndarray:
        outputs = session.run({input_name: x.numpy()})
        return outputs[output] if output in outputs else next(iter(outputs.values()))

    return predict


def measure_top1(predictors: dict[str, Predictor], folder: ImageFolder, n: int | None, seed: int,
                 data_config: dict[str, Any], batch_size: int, label_names: Sequence[str] | None,
                 change_against: str | None = None) -> dict[str, Any]:
    """Top-1 of every predictor on the same images; agreement with the first one; and the
    paired standard error of each one's top-1 change against ``change_against`` (default:
    the first one)."""
    samples = folder.subset(n, seed)
    mapping, how = label_map(folder.classes, label_names)
    remap = np.asarray(mapping)
    reference = next(iter(predictors))
    counter = Top1Counter(list(predictors), reference=reference)
    progress.step(f"evaluating top-1 on {len(samples)} images of {folder.root} ({', '.join(predictors)})")
    with progress.progress("evaluating", len(samples)) as advance:
        for x, y in image_batches(samples, data_config, batch_size):
            counter.update(remap[y.numpy()], {name: predict(x) for name, predict in predictors.items()})
            advance(len(y))
    per = counter.result()
    against = change_against or reference
    key = f"agreement_with_{reference}"
    return {
        "dataset": str(folder.root), "n": counter.n, "seed": seed, "label_mapping": how,
        "top1": {k: v["top1"] for k, v in per.items()},
        key: {k: v[key] for k, v in per.items() if k != reference},
        # paired standard error of each top-1 change, same images
        "change_se_against": against,
        "change_se": {k: counter.change_se(k, against) for k in predictors if k != against},
    }
