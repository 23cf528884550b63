"""Label schemes: how a fine parcellation maps to a few coarse classes, and how volumes are measured.

A scheme is a JSON data file (see ``label_schemes/muse-coarse.json``)::

    {"name": ..., "classes": [{"index": 0, "name": "background", "labels": [0]}, ...],
     "volumes": {"ventricular_volume": {"labels": [4, 11, ...]}, "intracranial_volume": {"labels": "nonzero"}},
     "coarse_volumes": {"ventricular_volume": ["ventricles"], ...}}

``volumes`` measure a covariate (in mL) on the fine source labels, ``coarse_volumes`` on the coarse
classes, so generated label maps are measured the same way as the real ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from synthbrain import _io

BUILTIN_SCHEMES = ("muse-coarse",)


@dataclass(frozen=True)
class LabelScheme:
    """A label scheme read from its JSON form (see the module docstring).

    ``class_names``: the coarse classes by index (0 is background); ``class_labels``: the fine source
    labels of each class; ``volumes``: covariate name → ``{"labels": [fine labels] or "nonzero"}``;
    ``coarse_volumes``: covariate name → the class names it sums; ``description``: free text.
    """

    name: str
    class_names: tuple[str, ...]
    class_labels: tuple[tuple[int, ...], ...]
    volumes: dict[str, Any]
    coarse_volumes: dict[str, tuple[str, ...]]
    description: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelScheme:
        """The scheme from its JSON form. Raises ``ValueError`` when the class indices are not 0..C-1, a
        fine label is in two classes, or ``coarse_volumes`` names an unknown class; ``KeyError`` for a
        missing ``name``, ``classes`` or class field."""
        classes = sorted(data["classes"], key=lambda c: c["index"])
        indices = [c["index"] for c in classes]
        if indices != list(range(len(classes))):
            raise ValueError(f"label scheme {data.get('name')!r}: class indices {indices}; must be 0..{len(classes) - 1}")
        seen: dict[int, str] = {}
        for c in classes:
            for label in c["labels"]:
                if label in seen:
                    raise ValueError(f"label scheme {data['name']!r}: label {label} is in both {seen[label]!r} and {c['name']!r}")
                seen[label] = c["name"]
        names = tuple(c["name"] for c in classes)
        coarse = {k: tuple(v) for k, v in data.get("coarse_volumes", {}).items()}
        for key, members in coarse.items():
            unknown = sorted(set(members) - set(names))
            if unknown:
                raise ValueError(
                    f"label scheme {data['name']!r}: coarse_volumes[{key!r}] names unknown classes {unknown}; classes: {list(names)}"
                )
        return cls(
            name=data["name"],
            class_names=names,
            class_labels=tuple(tuple(int(x) for x in c["labels"]) for c in classes),
            volumes=dict(data.get("volumes", {})),
            coarse_volumes=coarse,
            description=data.get("description", ""),
        )

    @classmethod
    def load(cls, name_or_path: str | Path) -> LabelScheme:
        """Load a built-in scheme by name (``"muse-coarse"``) or a scheme JSON file by path. Raises
        ``ValueError`` when it is neither, or as :meth:`from_dict`."""
        if str(name_or_path) in BUILTIN_SCHEMES:
            text = resources.files("synthbrain.cohort").joinpath("label_schemes").joinpath(f"{name_or_path}.json").read_text("utf-8")
            return cls.from_dict(json.loads(text))
        if not Path(name_or_path).is_file():
            raise ValueError(f"label_scheme={str(name_or_path)!r}: neither a built-in scheme {list(BUILTIN_SCHEMES)} nor a JSON file")
        return cls.from_dict(_io.read_json(name_or_path, "a label scheme JSON file"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that :meth:`from_dict` reads."""
        return {
            "name": self.name,
            "description": self.description,
            "classes": [
                {"index": i, "name": name, "labels": list(group)}
                for i, (name, group) in enumerate(zip(self.class_names, self.class_labels))
            ],
            "volumes": self.volumes,
            "coarse_volumes": {k: list(v) for k, v in self.coarse_volumes.items()},
        }

    @property
    def num_classes(self) -> int:
        """Number of coarse classes, background included."""
        return len(self.class_names)

    def remap(self, labels: np.ndarray) -> np.ndarray:
        """Fine integer labels (any shape) → coarse class indices, uint8 of the same shape. Raises
        ``ValueError`` naming the labels that no class maps."""
        present = np.unique(labels)
        mapped = {label for group in self.class_labels for label in group}
        unmapped = sorted(int(x) for x in present if int(x) not in mapped)
        if unmapped:
            raise ValueError(f"label map has labels {unmapped} that label scheme {self.name!r} does not map to any class")
        lut = np.zeros(int(present.max()) + 1, dtype=np.uint8)
        for index, group in enumerate(self.class_labels):
            for label in group:
                if label < lut.size:
                    lut[label] = index
        return lut[labels.astype(np.int64)]

    def measure_volumes(self, labels: np.ndarray, voxel_volume_mm3: float) -> dict[str, float]:
        """Volumes in mL of each entry of ``volumes``, measured on fine source labels (a 3D integer map) with
        voxels of ``voxel_volume_mm3`` mm3 (1 mL = 1000 mm3)."""
        out = {}
        for key, spec in self.volumes.items():
            members = spec["labels"]
            mask = labels > 0 if members == "nonzero" else np.isin(labels, members)
            out[key] = float(mask.sum()) * voxel_volume_mm3 / 1000.0
        return out

    def measure_coarse_volumes(self, classes: np.ndarray, voxel_volume_mm3: float) -> dict[str, float]:
        """Volumes in mL of each entry of ``coarse_volumes``, measured on a coarse class-index map with
        voxels of ``voxel_volume_mm3`` mm3."""
        out = {}
        for key, members in self.coarse_volumes.items():
            mask = np.isin(classes, [self.class_names.index(m) for m in members])
            out[key] = float(mask.sum()) * voxel_volume_mm3 / 1000.0
        return out
