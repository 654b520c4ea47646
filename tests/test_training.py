"""The shared fine-tuning loop's schedule: a wall-time cap fits the cosine to the steps it
leaves, and without one the schedule is the plain cosine, step for step."""
import math

import pytest
import torch

from edgevit import training
from edgevit.training import TimeFittedCosine, train_loop
from edgevit.training_config import FinetuneConfig


@pytest.fixture
def rates(monkeypatch):
    """The learning rate of every optimizer step, in order."""
    seen, original = [], torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return seen


def _run(monkeypatch, epochs: float, max_minutes, seconds_per_step: float = 1.0) -> dict:
    clock = [1000.0]  # a fake monotonic clock: each loss costs seconds_per_step
    monkeypatch.setattr(training.time, "monotonic", lambda: clock[0])
    weight = torch.nn.Parameter(torch.ones(3))

    def loss(_):
        clock[0] += seconds_per_step
        return (weight ** 2).sum()

    cfg = FinetuneConfig(epochs=epochs, lr=0.1, max_minutes=max_minutes)
    return train_loop([weight], lambda: list(range(50)), loss, cfg, "test")


def test_a_capped_run_ends_its_cosine_at_the_floor_within_the_cap(monkeypatch, rates):
    record = _run(monkeypatch, epochs=10, max_minutes=2)  # 500 steps planned, about 114 fit in 2 minutes at 1 s each
    assert record["planned_steps"] == 500 and 100 <= record["steps"] < 120, record
    assert record["stopped_by"] == "max_minutes" and record["wall_s"] <= 120
    assert rates[0] == pytest.approx(0.1) and rates[-1] < 0.1 * 0.05  # down to about 1 % of the rate, not cut at 80 %


def test_without_a_cap_the_schedule_is_the_plain_cosine(monkeypatch, rates):
    record = _run(monkeypatch, epochs=2, max_minutes=None)
    assert record["steps"] == record["planned_steps"] == 100 and record["stopped_by"] == "epochs"
    expected = [0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * k / 100)) for k in range(100)]
    assert rates == pytest.approx(expected, rel=1e-6)


def test_time_to_spare_changes_nothing(monkeypatch, rates):
    record = _run(monkeypatch, epochs=2, max_minutes=60)  # 100 s of 3600
    assert record["steps"] == 100 and record["stopped_by"] == "epochs"
    assert rates[-1] == pytest.approx(0.001 + 0.099 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_the_fit_only_shrinks_the_plan():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    schedule = TimeFittedCosine(optimizer, 30, max_minutes=10_000)
    for _ in range(TimeFittedCosine.FIT_AFTER + 1):
        optimizer.step()
        schedule.step()
    assert schedule.total_steps == 30
