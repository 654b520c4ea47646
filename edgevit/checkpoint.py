"""Reading state dicts safely: safetensors first, pickle only through weights_only."""
from __future__ import annotations

from pathlib import Path

import torch

from edgevit.errors import ModelError

_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found", "check --checkpoint")
    if path.suffix in SAFETENSORS_SUFFIXES:
        state = _read_safetensors(path)
    elif path.suffix in PICKLE_SUFFIXES:
        state = _read_pickle(path)
    else:
        raise ModelError(
            f"{path}: unknown checkpoint type '{path.suffix}'",
            "use a .safetensors file (preferred) or a .pth/.pt state dict",
        )
    return _unwrap(path, state)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises several types for truncated/corrupt files
        raise ModelError(
            f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})",
            "the file is corrupt or truncated; re-save it with safetensors.torch.save_file",
        ) from None


def _read_pickle(path: Path) -> dict:
    try:
        # weights_only: a checkpoint is data; never run code from it.
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{path}: cannot be read as a weights-only PyTorch checkpoint ({type(exc).__name__})",
            "save a plain state dict (torch.save(model.state_dict(), ...)) or convert it to .safetensors",
        ) from None


def _unwrap(path: Path, state: object) -> dict[str, torch.Tensor]:
    if isinstance(state, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError(f"{path}: does not hold a state dict of tensors", "save model.state_dict()")
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load with a one-line summary of what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise ModelError(
            f"{source}: does not fit the model: " + "; ".join(parts),
            "check the model name and model_args (e.g. num_classes, img_size) match the checkpoint",
        )
    _check_dtypes(own, state, source)
    model.load_state_dict(state, strict=True)


def _check_dtypes(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: Path) -> None:
    """load_state_dict casts silently: integer weights (a quantized or corrupted export)
    would become float parameters holding integer codes, and floats copied into an index
    buffer would be truncated. Only float-to-float (fp16/bf16 -> fp32) is a safe cast."""
    for k, mine in own.items():
        theirs = state[k]
        if mine.is_floating_point() != theirs.is_floating_point() or theirs.is_complex() != mine.is_complex():
            raise ModelError(
                f"{source}: tensor {k} is {str(theirs.dtype).removeprefix('torch.')} where the model has "
                f"{str(mine.dtype).removeprefix('torch.')}; it would be cast silently",
                "give the float (unquantized) state dict; edgevit quantizes in its own passes",
            )
