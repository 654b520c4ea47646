"""Shared fixtures: tiny image folders, tiny timm models, recipe files, CLI runners."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CIFAR_TEST = SHARED / "data" / "cifar10" / "test"
VIT_C10 = SHARED / "models" / "vit_tiny_c10"
SWIN_C10 = SHARED / "models" / "swin_tiny_c10"

# Small members of each supported family, random weights, built offline by timm.
TINY_VIT = ("test_vit", {})
TINY_SWIN = ("swin_tiny_patch4_window7_224", {"img_size": 32, "patch_size": 2, "embed_dim": 24,
                                               "depths": [1, 1], "num_heads": [1, 2], "window_size": 4, "num_classes": 10})

torch.set_num_threads(2)
needs_shared = pytest.mark.skipif(not CIFAR_TEST.is_dir() or not VIT_C10.is_dir(), reason="../shared data/models absent")


def write_images(root: Path, classes=("cat", "dog"), per_class=6, size=40, seed=0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / c / f"{i:03d}.png")
    return root


@pytest.fixture
def images(tmp_path) -> Path:
    return write_images(tmp_path / "images")


@pytest.fixture
def write_recipe(tmp_path):
    def write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def cli():
    from edgevit.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)

    return invoke


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch):
    monkeypatch.setenv("TIMM_FUSED_ATTN", os.environ.get("TIMM_FUSED_ATTN", "1"))


@pytest.fixture
def one_graph_run():
    """(one-graph cascade .onnx, runtime, image) -> run(thresholds) -> (logits, exit taken):
    the graph run directly in ONNX Runtime or OpenVINO (f32), without the device runner."""
    def open_graph(graph: Path, runtime: str, x):
        if runtime == "onnxruntime":
            import onnxruntime as ort

            session = ort.InferenceSession(str(graph))
            return lambda t: session.run(None, {"input": x, "exit_thresholds": t})
        import openvino as ov

        compiled = ov.Core().compile_model(ov.convert_model(str(graph)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return lambda t: [compiled({"input": x, "exit_thresholds": t})[i] for i in range(2)]
    return open_graph
