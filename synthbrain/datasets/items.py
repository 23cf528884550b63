"""What a dataset of this package serves: dict items that MONAI dictionary transforms and
``torch.utils.data.default_collate`` take as they are, or torchio Subjects.

A dict item (:class:`Item`) holds ``"image"`` (1, D, H, W) float32 and ``"label"`` (1, D, H, W)
int64 class indices, channel first as MONAI and torchio expect, and ``"affine"`` (4, 4) float64, the
voxel-to-world (RAS, mm) matrix of both; then the dataset's own entries (``"covariates"``,
``"index"``, ...). A Subject (:class:`Subject`) holds ``"image"`` (``tio.ScalarImage``) and
``"label"`` (``tio.LabelMap``), each with the affine.

The old key ``"labels"`` ((D, H, W) in a dict item, the LabelMap in a Subject) is deprecated: it is
not stored, reading it gives the value it used to hold from ``"label"`` with a ``FutureWarning``
(shown by default, unlike ``DeprecationWarning``, which Python hides unless the code reading the key
is ``__main__``: a training loop in a module of its own, or a library, would never show it). It also
works on a collated batch (``batch["labels"]`` is ``batch["label"][:, 0]``, (B, D, H, W)), since
``default_collate`` copies the item's type, and after a dataset's ``transform`` that returns a plain
dict (MONAI's dictionary transforms do), which the dataset makes an :class:`Item` again. Keys a
transform stores as ``"labels"`` are kept as given.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    import torchio as tio

DEPRECATED = "labels"
_MESSAGE = (
    "the key 'labels' of synthbrain dataset items is deprecated and will be removed: use 'label', the label map with its "
    "channel, {shape} (MONAI's and torchio's convention); 'labels' gives {old}"
)


def _warn(shape: str, old: str) -> None:
    # stacklevel: this function, the class's _old, the __getitem__ or get that serves the old key, then the caller's line
    warnings.warn(_MESSAGE.format(shape=shape, old=old), FutureWarning, stacklevel=4)


class _OldKey:
    """The deprecated key's lookups, shared by :class:`Item` and :class:`Subject` (each says, in
    ``_old``, what ``"labels"`` gives): ``[...]``, ``get`` and ``in`` find it while only ``"label"`` is
    stored; every other key is the base class's."""

    def _serves_old(self, key: Any) -> bool:
        return key == DEPRECATED and not dict.__contains__(self, key) and dict.__contains__(self, "label")

    def __getitem__(self, key: Any) -> Any:
        return self._old() if self._serves_old(key) else super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        return self._old() if self._serves_old(key) else super().get(key, default)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or self._serves_old(key)


class Item(_OldKey, dict):
    """A dict item; ``item["labels"]`` (deprecated) gives ``item["label"][..., 0, :, :, :]`` with a
    ``FutureWarning``. Everything else is a plain ``dict``."""

    def _old(self) -> Any:
        _warn("(1, D, H, W) per item", "item['label'][0] (D, H, W), batch['label'][:, 0] (B, D, H, W)")
        return dict.__getitem__(self, "label")[..., 0, :, :, :]


def _subject_class() -> type:
    """:class:`Subject`, defined on first use so that dict items never import torchio (the GPU
    machine of ``benchmarks/gpu/run.py`` has none)."""
    import torchio as tio

    class Subject(_OldKey, tio.Subject):
        """A torchio Subject; ``subject["labels"]`` and ``subject.get("labels")`` (deprecated) give
        ``subject["label"]`` (the same ``LabelMap``) with a ``FutureWarning``. Transforms keep the class
        (they deep-copy the subject)."""

        def _old(self) -> Any:
            _warn("a LabelMap", "subject['label'], the same LabelMap")
            return dict.__getitem__(self, "label")

    Subject.__module__, Subject.__qualname__ = __name__, "Subject"  # pickled by name, found through __getattr__ below
    return Subject


def subject_class() -> type:
    """:class:`Subject` (torchio is imported here, on first use); built once."""
    if "Subject" not in globals():
        globals()["Subject"] = _subject_class()
    return globals()["Subject"]


def __getattr__(name: str) -> Any:
    if name == "Subject":  # PEP 562: `items.Subject`, `from ... import Subject` and unpickling find it here
        return subject_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_item(image: torch.Tensor, label: torch.Tensor | None, affine: Any, **entries: Any) -> Item:
    """A dict item: ``image`` (1, D, H, W), ``label`` (D, H, W) class indices stored as (1, D, H, W)
    int64 (left out when None), ``affine`` (4, 4) as float64, then ``entries`` in their order."""
    item = Item(image=image)
    if label is not None:
        item["label"] = label.long()[None]
    item["affine"] = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    item.update(entries)
    return item


def make_subject(image: torch.Tensor, label: torch.Tensor | None, affine: Any, **entries: Any) -> tio.Subject:
    """A torchio Subject: ``image`` (1, D, H, W) as ``"image"``, ``label`` (D, H, W) as ``"label"``
    (left out when None), both on ``affine`` (4, 4), then ``entries``."""
    import torchio as tio

    affine = np.asarray(affine, dtype=np.float64)
    parts: dict[str, Any] = {"image": tio.ScalarImage(tensor=image, affine=affine)}
    if label is not None:
        parts["label"] = tio.LabelMap(tensor=label.long()[None], affine=affine)
    return subject_class()(**parts, **entries)
