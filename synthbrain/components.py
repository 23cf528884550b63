"""Model components on disk: a folder with ``config.json`` (class, constructor config, library
version) and ``model.safetensors``. Loading is strict: another class, unknown config keys, an
unreadable file, and missing, unexpected or mis-shaped weights are all errors (``ValueError``
naming the file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from safetensors.torch import load_file, save_file
from torch import nn

from synthbrain import __version__, _io

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class _Config(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def save_component(model: nn.Module, folder: str | Path) -> None:
    folder = Path(folder)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with _io.atomic_path(folder / WEIGHTS) as tmp:
        save_file(weights, str(tmp))
    _io.write_json(folder / CONFIG, {"class": type(model).__name__, "synthbrain_version": __version__, **model.config.to_dict()})


def load_component(model_class: type[nn.Module], config_class: Any, folder: str | Path) -> nn.Module:
    folder = Path(folder)
    for name in (CONFIG, WEIGHTS):
        if not (folder / name).is_file():
            raise ValueError(f"{folder}: missing {name}; a component folder holds {CONFIG} and {WEIGHTS}")
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{folder / CONFIG}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{folder / CONFIG}: a JSON {type(config).__name__}; expected an object")
    found = config.pop("class", None)
    if found != model_class.__name__:
        raise ValueError(f"{folder / CONFIG}: class {found!r}; expected {model_class.__name__!r}")
    config.pop("synthbrain_version", None)
    try:
        model = model_class(config_class.from_dict(config))
    except KeyError as err:
        raise ValueError(f"{folder / CONFIG}: missing key {err}") from None
    except (TypeError, ValueError) as err:  # unknown keys, a required one missing, a bad value
        raise ValueError(f"{folder / CONFIG}: {err}") from None
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
