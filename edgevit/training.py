"""The one fine-tuning loop every pass shares: seeded, wall-time capped, with progress.

Default loss is distillation from the uncompressed model (the teacher): the compressed
student matches the teacher's softened logits, so no labels are needed and the student
learns what the user's model does, not a new task. ``loss: ce`` uses the folder labels.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from edgevit import progress
from edgevit.data import ImageFolder, label_map, scan_image_folder
from edgevit.training_config import FinetuneConfig  # noqa: F401  (passes import it from here)

if TYPE_CHECKING:  # passes import this module; a runtime import would be circular
    from edgevit.passes.base import PassContext


class _TrainSet(torch.utils.data.Dataset):
    def __init__(self, samples, data_config: dict[str, Any]):
        from edgevit.data import eval_transform

        self.samples, self.transform = samples, eval_transform(data_config)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from edgevit.images import decode_rgb8

        path, label = self.samples[i]
        return self.transform(decode_rgb8(path)), label  # same decoding (16-bit, float, alpha) as evaluation


def finetune(student: nn.Module, teacher: nn.Module | None, train_data: Path | ImageFolder, data_config: dict[str, Any],
             cfg: FinetuneConfig, seed: int, trainable: list[nn.Parameter] | None = None,
             label_names: list[str] | None = None, after_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train ``student`` in place; returns the record that goes into the pass record."""
    folder = train_data if isinstance(train_data, ImageFolder) else scan_image_folder(train_data, "--train-data")
    if cfg.loss == "distill" and teacher is None:
        raise ValueError("distillation needs the teacher model")
    torch.manual_seed(seed)
    mapping, _ = label_map(folder.classes, label_names)
    samples = tuple((path, mapping[label]) for path, label in folder.subset(cfg.max_images, seed))
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(_TrainSet(samples, data_config), batch_size=cfg.batch_size, shuffle=True,
                                         generator=gen, drop_last=len(samples) > cfg.batch_size)
    params = trainable if trainable is not None else [p for p in student.parameters() if p.requires_grad]
    if teacher is not None:
        teacher.eval()
    student.train()
    loop = train_loop(params, lambda: loader, lambda batch: _loss(student, teacher, *batch, cfg), cfg,
                      f"fine-tuning ({cfg.loss})", after_step)
    student.eval()
    return {
        "loss": cfg.loss, "images_per_epoch": len(samples), "batch_size": cfg.batch_size, "lr": cfg.lr,
        "augmentation": "none (evaluation preprocessing)", "train_data": str(folder.root), "seed": seed, **loop,
    }


def train_loop(params: list[nn.Parameter], epoch_batches: Callable[[], Any], batch_loss: Callable[[Any], torch.Tensor],
               cfg: FinetuneConfig, label: str, after_step: Callable[[], None] | None = None) -> dict[str, Any]:
    """AdamW + cosine schedule + gradient clipping over ``cfg.epochs`` passes of
    ``epoch_batches()`` (a fresh iterable per epoch), stopped early by ``cfg.max_minutes``.
    Seeding is the caller's (it owns the data order). Returns the training figures."""
    steps_per_epoch = len(epoch_batches())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=cfg.lr * 0.01)
    deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    steps, losses, started, stopped_by = 0, [], time.monotonic(), "epochs"
    with progress.progress(label, total_steps) as advance:
        while steps < total_steps:
            for batch in epoch_batches():
                if steps >= total_steps:
                    break
                if time.monotonic() > deadline:
                    stopped_by = "max_minutes"
                    break
                loss = batch_loss(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                if after_step is not None:
                    after_step()
                losses.append(loss.item())
                steps += 1
                advance(1)
            if stopped_by != "epochs":
                break
    window = max(1, min(20, len(losses) // 4))
    return {
        "steps": steps, "epochs": steps / max(1, steps_per_epoch), "wall_s": round(time.monotonic() - started, 2),
        "stopped_by": stopped_by, "threads": torch.get_num_threads(),
        "loss_first": sum(losses[:window]) / window if losses else None,
        "loss_last": sum(losses[-window:]) / window if losses else None,
        "reproducible": torch.get_num_threads() == 1,  # multi-threaded reductions may differ run to run
    }


def finetune_if_asked(model: nn.Module, cfg: FinetuneConfig | None, ctx: "PassContext",
                      after_step: Callable[[], None] | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Fine-tune when the pass has a finetune block and training images were given.
    Returns (training record, None) or (None, the note saying why the pass is training-free)."""
    if cfg is None:
        return None, "training-free (no finetune block)"
    if ctx.train_data is None:
        return None, "training-free: finetune requested but no --train-data given"
    return finetune(model, ctx.teacher, ctx.train_data, ctx.data_config, cfg, ctx.seed,
                    label_names=ctx.label_names, after_step=after_step), None


def _loss(student: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor, cfg: FinetuneConfig) -> torch.Tensor:
    logits = student(x)
    if cfg.loss == "ce":
        return F.cross_entropy(logits, y)
    with torch.no_grad():
        target = teacher(x)
    t = cfg.temperature
    return F.kl_div(F.log_softmax(logits / t, -1), F.log_softmax(target / t, -1), log_target=True, reduction="batchmean") * t * t
