"""Model components on disk: a folder with ``config.json`` (class, constructor config, library
version) and ``model.safetensors``. Loading is strict: another class, unknown config keys, and
missing or unexpected weights are all errors."""

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
    config = json.loads((folder / CONFIG).read_text())
    found = config.pop("class", None)
    if found != model_class.__name__:
        raise ValueError(f"{folder / CONFIG}: class {found!r}; expected {model_class.__name__!r}")
    config.pop("synthbrain_version", None)
    model = model_class(config_class.from_dict(config))
    model.load_state_dict(load_file(folder / WEIGHTS), strict=True)
    return model
