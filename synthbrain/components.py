"""Model components on disk, one format for all: a folder with ``config.json`` (class, constructor
config, library version) and, for networks, ``model.safetensors`` (as diffusers stores its
components). A noise schedule is a component with a config and no weights. Loading is strict:
another class, unknown config keys, an unreadable file, and missing, unexpected or mis-shaped
weights are all errors (``ValueError`` naming the file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from synthbrain import __version__, _io

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class _Config(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def save_config(obj: _Config, folder: str | Path, class_name: str | None = None) -> None:
    """Write ``folder/config.json``: ``class`` (``class_name`` or the object's type), the library
    version, and ``obj.to_dict()``."""
    config = {"class": class_name or type(obj).__name__, "synthbrain_version": __version__, **obj.to_dict()}
    _io.write_json(Path(folder) / CONFIG, config)


def load_config(config_class: Any, folder: str | Path, class_name: str | None = None) -> Any:
    """``config_class.from_dict`` of ``folder/config.json``, whose ``class`` must be ``class_name``
    (default: the config class's name); the version is ignored. Raises ``ValueError`` naming the file for a
    missing or invalid ``config.json``, another class, or keys or values that ``from_dict`` refuses."""
    folder = Path(folder)
    config = _io.read_json(folder / CONFIG, f"a component folder holds {CONFIG} (and {WEIGHTS} for a network)")
    expected = class_name or config_class.__name__
    found = config.pop("class", None)
    if found != expected:
        raise ValueError(f"{folder / CONFIG}: class {found!r}; expected {expected!r}")
    config.pop("synthbrain_version", None)
    try:
        return config_class.from_dict(config)
    except KeyError as err:
        raise ValueError(f"{folder / CONFIG}: missing key {err}") from None
    except (TypeError, ValueError) as err:  # unknown keys, a required one missing, a bad value
        raise ValueError(f"{folder / CONFIG}: {err}") from None


def save_component(model: nn.Module, folder: str | Path) -> None:
    """Write a network (with a ``config`` attribute that has ``to_dict``) as ``folder/model.safetensors``
    and ``folder/config.json``."""
    folder = Path(folder)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with _io.atomic_path(folder / WEIGHTS) as tmp:
        save_file(weights, str(tmp))
    save_config(model.config, folder, type(model).__name__)


def load_component(model_class: type[nn.Module], config_class: Any, folder: str | Path, dtype: torch.dtype | None = None) -> nn.Module:
    """Build ``model_class(config)`` from ``folder/config.json`` and load ``folder/model.safetensors``
    strictly, on the CPU, into parameters of ``dtype`` (as built, float32, when None). Raises ``ValueError``
    naming the file as :func:`load_config` does, and for a missing or unreadable ``model.safetensors`` or
    missing, unexpected or mis-shaped weights."""
    folder = Path(folder)
    config = load_config(config_class, folder, model_class.__name__)
    if not (folder / WEIGHTS).is_file():
        raise ValueError(f"{folder}: missing {WEIGHTS}; a component folder holds {CONFIG} and {WEIGHTS}")
    try:
        model = model_class(config)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{folder / CONFIG}: {err}") from None
    model.to(dtype)
    try:
        weights = load_file(folder / WEIGHTS)
    except Exception as err:  # safetensors raises its own SafetensorError for a damaged header
        raise ValueError(f"{folder / WEIGHTS}: not a readable safetensors file ({err})") from None
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{folder / WEIGHTS}: missing weights {_few(missing)}, unexpected weights {_few(unexpected)}; "
            f"the file does not match the {model_class.__name__} that {CONFIG} describes"
        )
    shapes = [f"{k} {tuple(weights[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items() if weights[k].shape != v.shape]
    if shapes:
        raise ValueError(f"{folder / WEIGHTS}: weights of the wrong shape {_few(shapes)}; the file does not match {CONFIG}")
    model.load_state_dict(weights, strict=True)
    return model


def _few(names: list[str], limit: int = 5) -> str:
    return f"{names[:limit]}{f' and {len(names) - limit} more' if len(names) > limit else ''}"
