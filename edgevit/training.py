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
    When the steps measured so far say the cap will cut the run short, the cosine is
    fitted to the steps the cap leaves (``TimeFittedCosine``): a run stopped by the clock
    still ends at the low rate. Seeding is the caller's (it owns the data order). Returns
    the training figures."""
    steps_per_epoch = len(epoch_batches())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    planned = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    schedule = TimeFittedCosine(optimizer, planned, cfg.max_minutes)
    steps, losses, started, stopped_by = 0, [], time.monotonic(), "epochs"
    with progress.progress(label, planned) as advance:
        while steps < schedule.total_steps:
            for batch in epoch_batches():
                if steps >= schedule.total_steps:
                    break
                if schedule.out_of_time():
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
    if steps < planned and stopped_by == "epochs":
        stopped_by = "max_minutes"  # the schedule was fitted to the cap and ran to its end
    window = max(1, min(20, len(losses) // 4))
    return {
        "steps": steps, "planned_steps": planned, "epochs": steps / max(1, steps_per_epoch),
        "wall_s": round(time.monotonic() - started, 2),
        "stopped_by": stopped_by, "threads": torch.get_num_threads(),
        "loss_first": sum(losses[:window]) / window if losses else None,
        "loss_last": sum(losses[-window:]) / window if losses else None,
        "reproducible": torch.get_num_threads() == 1,  # multi-threaded reductions may differ run to run
    }


class TimeFittedCosine:
    """Cosine decay from the base rate to 1 % of it over ``total_steps``. With a wall-time
    cap, the step time is measured as the run goes (from step ``FIT_AFTER`` on, again every
    ``FIT_EVERY`` steps) and ``total_steps`` shrinks to what the time left allows, keeping
    ``FIT_RESERVE`` of it spare: a cosine planned for epochs the cap then cuts would stop
    at a high rate, the weights still moving (swin_tiny_c10's exit heads in bench exits of
    2026-12-02: 20 epochs planned, 10.6 run in the 8 minutes). It never grows: without a cap, or with time to spare, the schedule is the
    planned one, step for step."""

    FIT_AFTER, FIT_EVERY, FIT_RESERVE, FLOOR = 20, 200, 0.05, 0.01

    def __init__(self, optimizer: torch.optim.Optimizer, planned_steps: int, max_minutes: float | None):
        self.total_steps = planned_steps
        self.steps = 0
        self.started = time.monotonic()
        self.deadline = self.started + max_minutes * 60 if max_minutes else math.inf
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._factor)

    def _factor(self, step: int) -> float:
        progress_made = min(1.0, step / max(1, self.total_steps))
        return self.FLOOR + (1 - self.FLOOR) * 0.5 * (1 + math.cos(math.pi * progress_made))

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    def step(self) -> None:
        self.steps += 1
        if self.deadline != math.inf and self.steps >= self.FIT_AFTER and (self.steps - self.FIT_AFTER) % self.FIT_EVERY == 0:
            now = time.monotonic()
            per_step = (now - self.started) / self.steps
            affordable = self.steps + int((self.deadline - now) * (1 - self.FIT_RESERVE) / per_step)
            self.total_steps = max(self.steps + 1, min(self.total_steps, affordable))
        self.scheduler.step()


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
