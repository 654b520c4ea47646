"""Making the user's model: a timm name, a local timm model folder, or a name + checkpoint.

A model folder is timm's layout (config.json + model.safetensors). edgevit writes its
compressed models in the same layout plus the pass records under "edgevit", so a
compressed model is rebuilt from data (architecture + records + safetensors), never
unpickled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from edgevit.checkpoint import load_into, read_state_dict
from edgevit.data import Preprocessing
from edgevit.errors import ModelError
from edgevit.schema import did_you_mean, first_error
from edgevit.textfile import dumps_finite, read_json, write_text

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class LoadedModel:
    model: nn.Module
    architecture: str
    model_args: dict[str, Any]
    pretrained_cfg: dict[str, Any]
    source: str
    weights: str  # human description of where the weights came from
    random_weights: bool
    label_names: list[str] | None = None
    pass_records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.data_config()["input_size"])  # type: ignore[return-value]

    def data_config(self) -> dict[str, Any]:
        from timm.data import resolve_data_config

        config = resolve_data_config(model=self.model)
        # A config.json read back gives lists; timm's own configs use tuples. One form.
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        # pretrained_cfg keeps the architecture's default size even when model_args set
        # img_size; the patch embedding knows the size the model was really built for.
        built = getattr(getattr(self.model, "patch_embed", None), "img_size", None)
        if built is not None:
            config["input_size"] = (config["input_size"][0], *tuple(built))
        return config


class _EdgevitSection(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    passes: list[dict[str, Any]] = []


class FolderConfig(BaseModel):
    """config.json of a model folder: the keys edgevit reads, typed; timm's other keys pass."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    architecture: str = Field(min_length=1)
    num_classes: int | None = Field(None, ge=0, le=1_000_000)
    model_args: dict[str, Any] | None = None
    pretrained_cfg: Preprocessing | None = None
    label_names: list[str] | None = None
    edgevit: _EdgevitSection | None = None


def read_folder_config(config_path: Path) -> tuple[FolderConfig, dict[str, Any]]:
    """The typed config and the raw dict (timm gets its pretrained_cfg as written)."""
    hint = "a timm model folder's config.json needs at least 'architecture' (see timm's push_to_hf_hub)"
    raw = read_json(config_path, ModelError, hint)
    try:
        return FolderConfig.model_validate(raw), raw
    except ValidationError as exc:
        raise ModelError(f"{config_path}: {first_error(exc, FolderConfig)}", hint) from None


def looks_like_path(name: str) -> bool:
    return "/" in name or name.startswith(".") or name.startswith("~")


def load_model(
    name: str,
    checkpoint: str | Path | None = None,
    pretrained: bool = False,
    model_args: dict[str, Any] | None = None,
) -> LoadedModel:
    model_args = dict(model_args or {})
    path = Path(name).expanduser()
    if path.exists():
        if checkpoint is not None:
            raise ModelError(f"--checkpoint {checkpoint}: not used with a model folder", "give a timm name with --checkpoint, or only the folder")
        return load_model_folder(path, extra_args=model_args)
    if looks_like_path(name):
        raise ModelError(f"{name}: model folder not found", "give an existing folder with config.json + model.safetensors, or a timm model name")
    return _load_timm_name(name, checkpoint, pretrained, model_args)


def _create(architecture: str, model_args: dict[str, Any], where: str = "model.model_args", **kwargs: Any) -> nn.Module:
    import timm

    if not timm.is_model(architecture):
        raise ModelError(
            f"'{architecture}': not a timm model name" + did_you_mean(architecture, timm.list_models()),
            "see timm.list_models() or give a local model folder",
        )
    try:
        return timm.create_model(architecture, **model_args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the kwargs are the user's; any failure to build is theirs
        if kwargs.get("pretrained"):
            raise  # hub errors: the caller says what to do offline
        raise ModelError(f"'{architecture}': timm cannot build it with {where} {model_args} "
                         f"({type(exc).__name__}: {str(exc)[:200]})",
                         "fix model.model_args in the recipe (or the model folder's config.json): "
                         "names and values timm's model class accepts") from None


def _load_timm_name(name: str, checkpoint, pretrained: bool, model_args: dict[str, Any]) -> LoadedModel:
    if checkpoint is not None:
        model = _create(name, model_args, pretrained=False)
        load_into(model, read_state_dict(Path(checkpoint)), Path(checkpoint))
        weights, random = f"checkpoint {checkpoint}", False
    elif pretrained:
        try:
            model = _create(name, model_args, pretrained=True)
        except ModelError:
            raise
        except Exception as exc:  # hub download errors vary (offline, no cache, auth)
            raise ModelError(
                f"'{name}': pretrained weights could not be loaded ({type(exc).__name__})",
                "this machine may be offline: pass --checkpoint FILE or a local model folder",
            ) from None
        weights, random = "timm pretrained weights", False
    else:
        model = _create(name, model_args, pretrained=False)
        weights, random = "random initialisation (latency and size only; accuracy is meaningless)", True
    model.eval()
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    return LoadedModel(model, name, model_args, cfg, source=name, weights=weights, random_weights=random)


def load_model_folder(path: Path, extra_args: dict[str, Any] | None = None) -> LoadedModel:
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not path.is_dir():
        raise ModelError(f"{path}: not a folder", "give a timm model folder (config.json + model.safetensors) or a timm name")
    if not config_path.is_file():
        raise ModelError(f"{config_path}: missing", "a timm model folder needs config.json and model.safetensors")
    if not weights_path.is_file():
        raise ModelError(f"{weights_path}: missing", "a timm model folder needs model.safetensors (pickled .bin is not read)")
    typed, config = read_folder_config(config_path)
    architecture = typed.architecture
    model_args = dict(typed.model_args or {})
    if typed.num_classes is not None:
        model_args.setdefault("num_classes", typed.num_classes)
    model_args.update(extra_args or {})
    pretrained_cfg = dict(config.get("pretrained_cfg") or {})
    model = _create(architecture, model_args, f"{config_path}: model_args (with the recipe's model.model_args)",
                    pretrained=False, pretrained_cfg_overlay=pretrained_cfg)
    records = list(typed.edgevit.passes if typed.edgevit else [])
    model = _rebuild(model, records, config_path)
    load_into(model, read_state_dict(weights_path), weights_path)
    model.eval()
    return LoadedModel(
        model, architecture, model_args, dict(getattr(model, "pretrained_cfg", pretrained_cfg)),
        source=str(path), weights=f"model folder {path}", random_weights=False,
        label_names=typed.label_names, pass_records=records,
    )


def _rebuild(model: nn.Module, records: list[dict[str, Any]], config_path: Path) -> nn.Module:
    """Replay the structural part of each pass record so the saved weights fit."""
    from edgevit.passes.base import PassRecord
    from edgevit.passes.specs import pass_impl, pass_specs

    for i, raw in enumerate(records):
        kind = raw.get("kind")
        if not isinstance(kind, str) or kind not in pass_specs():
            raise ModelError(f"{config_path}: edgevit.passes[{i}].kind '{kind}' is not known to this edgevit", "upgrade edgevit")
        try:
            record = PassRecord.model_validate(raw)
        except ValidationError as exc:
            raise ModelError(f"{config_path}: {first_error(exc, PassRecord, f'edgevit.passes[{i}]')}",
                             "the folder was not written by this edgevit, or was edited: re-run `edgevit compress`") from None
        try:
            model = pass_impl(kind)().rebuild(model, record)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - a record edited by hand can break a rebuild anywhere
            raise ModelError(f"{config_path}: edgevit.passes[{i}] ({kind}) cannot be replayed on {type(model).__name__} "
                             f"({type(exc).__name__}: {str(exc)[:200]})",
                             "the folder's config.json was edited or does not match its architecture: re-run `edgevit compress`") from None
    return model


def save_model_folder(loaded: LoadedModel, model: nn.Module, records: list[dict[str, Any]], out: Path) -> None:
    """timm-compatible folder: config.json (structure as data) + model.safetensors."""
    from safetensors.torch import save_model

    out.mkdir(parents=True, exist_ok=True)
    config = {
        "architecture": loaded.architecture,
        "num_classes": getattr(model, "num_classes", None),
        "model_args": loaded.model_args,
        "pretrained_cfg": _jsonable(loaded.pretrained_cfg),
        "edgevit": {"passes": records, "source": loaded.source, "weights": loaded.weights},
    }
    if loaded.label_names:
        config["label_names"] = loaded.label_names
    # strict JSON: read_folder_config refuses NaN, so a NaN written here would be a model
    # folder that cannot be loaded back
    text = dumps_finite(config, f"{out / CONFIG_FILE}", "a pass recorded a NaN/inf figure: the model or its fine-tune "
                        "produced non-finite numbers; check the checkpoint or lower finetune.lr", indent=2, sort_keys=True)
    write_text(out / CONFIG_FILE, text + "\n")
    save_model(model, str(out / WEIGHTS_FILE))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))

