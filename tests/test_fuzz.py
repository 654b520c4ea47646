"""Fuzz tests of the file entry points (issue 18): whatever bytes or structure a recipe,
export profile, model folder, checkpoint, image folder or report folder holds, the loader
succeeds or raises an EdgevitError -- never another exception -- and writes nothing outside
the sandbox folder the example lives in.

Inputs are valid files mutated at one random place with hostile values (NaN, inf, huge
and negative numbers, markup, non-UTF-8, deep nesting, wrong types), plus raw bytes; that
reaches deeper than random text, which the parsers reject on the first byte. Each test is
bounded (max_examples, small tensors and images) so all of them take well under a minute.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import REPO
from edgevit.errors import EdgevitError

# no shrinking: a failing example is one small mutation already, and shrinking one that
# renders plots takes minutes
FUZZ = settings(deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


def fuzz(max_examples: int) -> settings:
    """Bounded and reproducible (derandomize): the same examples in CI as here."""
    return settings(FUZZ, max_examples=max_examples)


# --- the watcher: no write outside the sandbox ------------------------------------------------

_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree", "os.symlink", "os.link",
                 "os.truncate", "os.chmod"}
_sandbox: dict[str, Any] = {"root": None, "escaped": []}


def _is_write(event: str, args: tuple) -> str | None:
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2] if len(args) > 2 else 0
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        return os.fsdecode(args[0]) if writing else None
    if event in _WRITE_EVENTS and args and isinstance(args[0], (str, bytes, os.PathLike)):
        return os.fsdecode(args[0])
    return None


def _audit(event: str, args: tuple) -> None:
    root = _sandbox["root"]
    if root is None:
        return
    path = _is_write(event, args)
    if path is None or "__pycache__" in path:
        return
    resolved = os.path.realpath(path)
    if not (resolved == root or resolved.startswith(root + os.sep)) and not resolved.startswith(_EXEMPT):
        _sandbox["escaped"].append(f"{event} {path}")


def _exempt_prefixes() -> tuple[str, ...]:
    """Caches third-party libraries keep for themselves (not edgevit writing)."""
    prefixes = []
    with contextlib.suppress(Exception):
        import matplotlib

        prefixes.append(os.path.realpath(matplotlib.get_cachedir()))
    return tuple(prefixes) or ("\0",)


_EXEMPT = _exempt_prefixes()
sys.addaudithook(_audit)  # audit hooks cannot be removed; it only acts while a sandbox is open


@contextlib.contextmanager
def sandbox():
    """A fresh folder for one example; a write outside it fails the test."""
    with tempfile.TemporaryDirectory(prefix="edgevit-fuzz-") as tmp:
        root = os.path.realpath(tmp)
        _sandbox.update(root=root, escaped=[])
        try:
            yield Path(root)
        finally:
            _sandbox["root"] = None
        assert not _sandbox["escaped"], f"wrote outside the sandbox: {_sandbox['escaped'][:3]}"


def only_edgevit_errors(load, *args):
    """Success or EdgevitError; anything else fails the example with its traceback."""
    try:
        return load(*args)
    except EdgevitError as exc:
        assert exc.message and "\n" not in exc.message.strip(), exc.message
        return None


# --- hostile values and mutations -------------------------------------------------------------

HOSTILE_SCALARS = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -1, 0, 2**64, -(2**63), 1e308, True, None, "", "[/red]",
                     "../../etc/passwd", "/dev/zero", "\udcff", "x" * 5000, "-rf", "${HOME}", "~"]),
    st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
)
HOSTILE = st.recursive(HOSTILE_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-3, 3)), inner, max_size=4)),
    max_leaves=12)


def deep(n: int) -> Any:
    value: Any = 1
    for _ in range(n):
        value = [value]
    return value


HOSTILE_OR_DEEP = st.one_of(HOSTILE, st.integers(900, 1500).map(deep))


def leaves(value: Any, path: tuple = ()) -> list[tuple]:
    """Every place in a nested dict/list (containers too) as a key path."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += leaves(v, path + (i,))
    return out


def mutated(draw, base: Any) -> Any:
    """``base`` with one place replaced by a hostile value, or one key added or removed."""
    value = json.loads(json.dumps(base))
    places = leaves(value)
    path = draw(st.sampled_from(places))
    action = draw(st.sampled_from(["replace", "replace", "add", "delete"]))
    new = draw(HOSTILE_OR_DEEP)
    if not path:
        return new if action == "replace" else value
    parent = value
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "replace":
        parent[last] = new
    elif action == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = new
    else:
        parent.insert(last, new)
    return value


DEEP_TEXT = b'{"name": "x", "a": ' + b"[" * 1200 + b"]" * 1200 + b"}"  # what a too-deep value serialises to


def dump_yaml(value: Any) -> bytes:
    try:
        return yaml.safe_dump(value, allow_unicode=True).encode("utf-8", "surrogateescape")
    except (yaml.YAMLError, RecursionError, UnicodeEncodeError):
        return dump_json(value)


def dump_json(value: Any) -> bytes:
    try:
        return json.dumps(value, default=str).encode("utf-8", "surrogatepass")
    except RecursionError:
        return DEEP_TEXT


RAW_BYTES = st.one_of(st.binary(max_size=300), st.sampled_from([
    b"", b"\xff\xfe\x00", b"a: &x [1]\nb: *x\n", b"a: 1\na: 2\n", b"!!python/object:os.system ls", b"- 1\n- 2\n",
    b"name: x\n" + b"[" * 3000, b"\x00" * 64, b"name: x\nseed: .nan\n", b"%YAML 9.9\n---\na: 1\n",
]))


def _yaml_inputs(folder: Path):
    bases = [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))]

    @st.composite
    def draw_input(draw):
        if draw(st.integers(0, 4)) == 0:
            return draw(RAW_BYTES)
        return dump_yaml(mutated(draw, draw(st.sampled_from(bases))))

    return draw_input()


# --- recipe and export profile ---------------------------------------------------------------


@fuzz(100)
@given(_yaml_inputs(REPO / "recipes"))
def test_fuzz_recipe_file(text):
    from edgevit.recipe import load_recipe

    with sandbox() as box:
        (box / "recipe.yaml").write_bytes(text)
        only_edgevit_errors(load_recipe, box / "recipe.yaml")


@fuzz(80)
@given(_yaml_inputs(REPO / "exporters"))
def test_fuzz_export_profile_file(text):
    from edgevit.exporters import load_profile

    with sandbox() as box:
        (box / "profile.yaml").write_bytes(text)
        only_edgevit_errors(load_profile, str(box / "profile.yaml"))


# --- model folder and checkpoint ------------------------------------------------------------

TINY_ARGS = {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2, "num_classes": 3}
# model_args are timm kwargs: only small values, so a mutation cannot ask for gigabytes
SMALL_ARGS = st.dictionaries(
    st.sampled_from(["img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_classes", "mlp_ratio", "global_pool",
                     "class_token", "no_embed_class", "reg_tokens", "nonsense"]),
    st.one_of(st.integers(-2, 8), st.sampled_from([None, "x", "token", [4, 4], [1, 2, 3], 0.5, float("nan")])), max_size=3)


@pytest.fixture(scope="module")
def tiny_model():
    from edgevit.models import load_model

    loaded = load_model("vit_tiny_patch16_224", model_args=TINY_ARGS)
    return loaded


def _safetensors_bytes(state) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


@st.composite
def checkpoint_bytes(draw, state: dict):
    """Valid safetensors / pickle bytes, corrupted, truncated, with a hostile header, or noise."""
    import torch

    kind = draw(st.sampled_from(["safetensors", "header", "truncate", "flip", "pickle", "pickle-hostile", "noise"]))
    good = _safetensors_bytes(state)
    if kind == "safetensors":
        return good, ".safetensors"
    if kind == "header":
        header = json.loads(good[8:8 + int.from_bytes(good[:8], "little")])
        text = dump_json(mutated(draw, header))
        return len(text).to_bytes(8, "little") + text + good[8 + int.from_bytes(good[:8], "little"):], ".safetensors"
    if kind == "truncate":
        return good[:draw(st.integers(0, len(good) - 1))], ".safetensors"
    if kind == "flip":
        data = bytearray(good)
        for i in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[i] ^= 0xFF
        return bytes(data), draw(st.sampled_from([".safetensors", ".pth"]))
    if kind in ("pickle", "pickle-hostile"):
        buf = io.BytesIO()
        obj: Any = dict(state)
        if kind == "pickle-hostile":
            obj = draw(st.sampled_from([
                {"state_dict": {1: torch.zeros(1)}}, {"model": "x"}, [torch.zeros(2)], {"a": {"b": torch.zeros(1)}},
                {k: v.to(torch.int32) for k, v in state.items()}, {k: v.half() for k, v in state.items()},
                {k: v[..., :1] for k, v in state.items()}, {"module." + k: v for k, v in state.items()}, draw(HOSTILE),
            ]))
        torch.save(obj, buf)
        data = buf.getvalue()
        if draw(st.booleans()):
            data = data[:draw(st.integers(0, len(data)))]
        return data, draw(st.sampled_from([".pth", ".pt", ".bin", ".ckpt"]))
    return draw(st.binary(max_size=200)), draw(st.sampled_from([".safetensors", ".pth", ".npz"]))


def test_fuzz_checkpoint_file(tiny_model):
    from edgevit.checkpoint import load_into, read_state_dict

    state = tiny_model.model.state_dict()

    @fuzz(80)
    @given(checkpoint_bytes(state))
    def run(example):
        data, suffix = example
        with sandbox() as box:
            path = box / f"ckpt{suffix}"
            path.write_bytes(data)
            loaded = only_edgevit_errors(read_state_dict, path)
            if loaded is not None:
                only_edgevit_errors(load_into, tiny_model.model, loaded, path)

    run()


@st.composite
def folder_config(draw, base: dict):
    if draw(st.integers(0, 5)) == 0:
        return draw(RAW_BYTES)
    config = mutated(draw, base)
    if isinstance(config, dict) and draw(st.booleans()):
        config["model_args"] = {**TINY_ARGS, **draw(SMALL_ARGS)}  # a hostile but small timm build
    return dump_json(config)


def test_fuzz_model_folder(tiny_model):
    from edgevit.models import load_model_folder, save_model_folder

    with tempfile.TemporaryDirectory() as tmp:
        save_model_folder(tiny_model, tiny_model.model, [], Path(tmp))
        base = json.loads((Path(tmp) / "config.json").read_text())
        weights = (Path(tmp) / "model.safetensors").read_bytes()

    @fuzz(80)
    @given(folder_config(base), st.sampled_from(["keep", "keep", "truncate", "empty"]))
    def run(config, weights_case):
        with sandbox() as box:
            (box / "config.json").write_bytes(config)
            data = {"keep": weights, "truncate": weights[: len(weights) // 2], "empty": b""}[weights_case]
            (box / "model.safetensors").write_bytes(data)
            loaded = only_edgevit_errors(load_model_folder, box)
            if loaded is not None:
                only_edgevit_errors(loaded.data_config)

    run()


# --- image folder ----------------------------------------------------------------------------

MODES = ["RGB", "RGBA", "L", "LA", "P", "PA", "1", "I", "I;16", "F", "CMYK", "YCbCr", "HSV", "LAB", "RGBX", "I;16B"]
FORMATS = {"png": "PNG", "tif": "TIFF", "bmp": "BMP", "jpg": "JPEG", "webp": "WEBP", "ppm": "PPM"}


@st.composite
def image_file(draw) -> tuple[str, bytes]:
    from PIL import Image

    ext = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(MODES))
    w, h = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    data = b""
    with contextlib.suppress(Exception):  # not every format stores every mode
        img = Image.new(mode, (w, h))
        if mode in ("I", "I;16", "I;16B", "F"):
            kind = {"I": np.int32, "F": np.float32}.get(mode, np.uint16)
            scale = draw(st.sampled_from([1.0, 255.0, 65535.0, 1e6, -5.0]))
            img = Image.fromarray((rng.random((h, w)) * scale).astype(kind))
        buf = io.BytesIO()
        img.save(buf, FORMATS[ext])
        data = buf.getvalue()
    cut = draw(st.sampled_from(["whole", "whole", "truncate", "noise"]))
    if cut == "truncate" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif cut == "noise" or not data:
        data = draw(st.binary(max_size=120))
    return ext, data


CLASS_NAMES = st.sampled_from(["cat", "dog", "[/red]", "x[bold]", "café", "-rf", " sp ace", "..x", "0"])


@fuzz(60)
@given(st.dictionaries(CLASS_NAMES, st.lists(image_file(), min_size=0, max_size=3), min_size=0, max_size=3))
def test_fuzz_image_folder(classes):
    from edgevit.data import load_images, scan_image_folder

    config = {"input_size": (3, 16, 16), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3,
              "crop_pct": 1.0, "crop_mode": "center"}
    with sandbox() as box:
        for name, files in classes.items():
            (box / "data" / name).mkdir(parents=True)
            for i, (ext, data) in enumerate(files):
                (box / "data" / name / f"{i}.{ext}").write_bytes(data)
        folder = only_edgevit_errors(scan_image_folder, box / "data", "--data")
        if folder is not None:
            batch = only_edgevit_errors(load_images, folder.samples, config)
            if batch is not None:
                assert batch.shape[1:] == (3, 16, 16) and bool(np.isfinite(batch.numpy()).all())


# --- report folder ---------------------------------------------------------------------------

FULL_REPORT = {
    "schema_version": 1,
    "model": {"architecture": "test_vit", "source": "m", "weights": "w", "input_size": [3, 16, 16]},
    "recipe": {"name": "r", "path": "r.yaml", "sha256": "0" * 64, "seed": 0},
    "flops": {"before": 10, "after": 8}, "params": {"before": 5, "after": 4},
    "calibration": {"source": "data", "n": 2, "seed": 0, "overlaps_eval": True},
    "warnings": ["w"],
    "passes": [{"kind": "quantize", "config": {"method": "lrp"}, "notes": ["n"],
                "training": {"epochs": 1.0, "images_per_epoch": 4, "wall_s": 1.0, "loss": "distill", "loss_first": 1.0,
                             "loss_last": 0.5, "stopped_by": "epochs"},
                "metrics": {"flops": 3, "bits_per_layer": {"a": 4, "b": 8}, "relevance": {"a": 0.5, "b": 1.0}}}],
    "artifacts": [{"name": "x86-onnxruntime", "runtime": "onnxruntime", "checked_in": "onnxruntime",
                   "baseline": {"timed": True, "size_ratio": 4.0, "speedup_cpu": 1.5, "speedup_p50": 1.4, "cpu_time_ms": 3.0,
                                "size_bytes": 4000, "rounds": 3, "faster": True},
                   "format": "onnx", "precision": "int8", "simulated": False,
                   "executed_precision": "int8", "size_bytes": 1000, "where_run": "this machine",
                   "check": {"metric": "sqnr+agreement", "value": 30.0, "threshold": {"min_sqnr_db": 20}, "passed": True}}],
    "accuracy": {"n": 4, "dataset": "d", "seed": 0, "label_mapping": "by sorted folder order",
                 "top1": {"pytorch": 0.5, "x86-onnxruntime": 0.5}, "agreement_with_pytorch": {"x86-onnxruntime": 1.0}},
    "cascade": {"evaluated": True, "images": 4, "data": "d", "artifacts": {"x86-onnxruntime": {
        "accuracy": 0.5, "full_model_accuracy": 0.5, "exit_histogram": [1, 3], "latency": {"mean_ms": 1, "p50_ms": 1, "p90_ms": 2},
        "full_model_latency": {"mean_ms": 2, "p90_ms": 3}, "speedup_mean": 2.0, "where_run": "here"}}},
    "profile": {"x86-onnxruntime": {"runtime": "onnxruntime", "runtime_version": "1", "threads": 1, "batch": 1, "runs": 2,
                                    "p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "mean_ms": 1.0, "cpu_time_ms": 1.0,
                                    "load_avg": [0.1, 0.2], "where_run": "this machine", "device": "x"}},
    "thresholds": {"int8": {"metric": "sqnr+agreement", "min_sqnr_db": 20.0}},
}


@st.composite
def report_text(draw) -> bytes:
    if draw(st.integers(0, 5)) == 0:
        return draw(RAW_BYTES)
    return dump_json(mutated(draw, FULL_REPORT))


def test_full_report_fixture_renders(tmp_path):
    """The fuzz base is a report the renderer accepts, so mutations start from a valid file."""
    from edgevit.report_html import write_report

    (tmp_path / "report.json").write_text(json.dumps(FULL_REPORT))
    assert (write_report(tmp_path) / "report.html").is_file()


@fuzz(30)
@given(report_text())
def test_fuzz_report_dir(text):
    from edgevit.report_html import write_report

    with sandbox() as box:
        (box / "run").mkdir()
        (box / "run" / "report.json").write_bytes(text)
        only_edgevit_errors(write_report, box / "run")


def test_the_watcher_sees_a_write_outside_the_sandbox(tmp_path):
    """The no-escape assertion above could pass vacuously; it does not."""
    with pytest.raises(AssertionError, match="wrote outside the sandbox"):
        with sandbox() as box:
            (box / "inside.txt").write_text("fine")
            (tmp_path / "outside.txt").write_text("caught")
