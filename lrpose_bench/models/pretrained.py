"""Load a user's local checkpoint (``model.pretrained: PATH``) into a backbone; nothing is downloaded.

Accepted layouts:

* official HRNet / SimpleBaseline files (leoxiaobin/deep-high-resolution-net.pytorch,
  ``lib/models/pose_hrnet.py`` / ``pose_resnet.py``): keys ``conv1.weight``, ``stage4.…``,
  ``deconv_layers.0.weight``, ``final_layer.weight`` — our models use exactly these names;
* mmpose files: ``backbone.…`` / ``head.final_layer.…`` (``keypoint_head.…`` in mmpose 0.x), renamed;
* DataParallel files (``module.…``) and wrappers ``{"state_dict": …}`` / ``{"model": …}``;
* torchvision / official ImageNet classification files, whose classifier keys (``fc.…``,
  ``classifier.…``, HRNet's ``incre_modules``/``downsamp_modules``) are skipped and reported.

Policy: the backbone is loaded strictly — every backbone tensor must be present with the
same shape, else :class:`CheckpointError` names the file and the first bad key. Head tensors
(``final_layer``, and for SimpleBaseline ``deconv_layers``) that are missing or have another shape
(a 17-channel final layer into a 51-channel UDP/CAL head) are skipped and reported; the head keeps
its fresh initialisation. Unknown keys that belong to no known family are "foreign" and rejected.
Files are read with ``torch.load(..., map_location="cpu", weights_only=True)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn as nn

from lrpose_bench.errors import CheckpointError

LOG = logging.getLogger(__name__)

#: prefix renames, tried in order (mmpose 1.x, mmpose 0.x, DataParallel)
PREFIX_RENAMES: tuple[tuple[str, str], ...] = (
    ("module.", ""),
    ("backbone.", ""),
    ("head.", ""),
    ("keypoint_head.", ""),
)

#: wrapper keys of training checkpoints that hold the state dict
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model", "model_state_dict", "net")


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did; ``summary()`` is the one line shown to the user."""

    path: str
    loaded: list[str] = field(default_factory=list)
    skipped_head: list[str] = field(default_factory=list)  # present but another shape
    missing_head: list[str] = field(default_factory=list)  # absent from the file
    ignored: list[str] = field(default_factory=list)  # known extra keys (classifier, …)

    def summary(self) -> str:
        parts = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        if self.skipped_head:
            parts.append(f"skipped head keys with another shape: {', '.join(self.skipped_head)}")
        if self.missing_head:
            parts.append(f"head keys not in the file (freshly initialised): {_short(self.missing_head)}")
        if self.ignored:
            parts.append(f"ignored extra keys: {_short(self.ignored)}")
        return "; ".join(parts)


def _short(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} … ({len(keys)} in all)"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` dict with official key names."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} not found: pass an existing file with --set model.pretrained=FILE")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure here is a bad file
        # truncated zip (RuntimeError), EOFError, objects refused by weights_only (UnpicklingError), …
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"checkpoint {file} cannot be read (truncated or not a PyTorch file): {first[:200]}"
        ) from None
    for _ in range(2):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"checkpoint {file} holds no state dict (found {type(obj).__name__})")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"checkpoint {file}: entry {key!r} is {type(value).__name__}, not a tensor; pass a model state dict"
            )
        state[_rename(str(key))] = value
    return state


def _rename(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for old, new in PREFIX_RENAMES:
            if key.startswith(old):
                key, changed = new + key[len(old) :], True
    return key


def _has_prefix(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p.rstrip(".") or key.startswith(p) for p in prefixes)


def _ignorable(key: str, patterns: tuple[str, ...]) -> bool:
    return any(re.match(pattern, key) for pattern in patterns)


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    *,
    head_prefixes: tuple[str, ...],
    ignorable: tuple[str, ...] = (),
) -> LoadReport:
    """Load ``path`` into ``model``: strict for the backbone, tolerant (and reporting) for the head.

    ``head_prefixes`` name the head modules (``("final_layer.",)``); ``ignorable`` are regular
    expressions (``re.match``) for key families of known checkpoints that our model lacks (``fc\\.``
    of a torchvision ImageNet file); such keys are skipped and reported.
    """
    file = str(Path(path).expanduser())
    source = read_state_dict(path)
    target = model.state_dict()
    report = LoadReport(path=file)
    to_load: dict[str, torch.Tensor] = {}

    for key, value in source.items():
        if key in target:
            if tuple(value.shape) == tuple(target[key].shape):
                to_load[key] = value
            elif _has_prefix(key, head_prefixes):
                report.skipped_head.append(f"{key} {tuple(value.shape)}→{tuple(target[key].shape)}")
            else:
                raise CheckpointError(
                    f"checkpoint {file}: key {key!r} has shape {tuple(value.shape)}, the model "
                    f"expects {tuple(target[key].shape)}; is it for another backbone/width?"
                )
        elif _has_prefix(key, head_prefixes) or _ignorable(key, ignorable):
            report.ignored.append(key)
        elif key.endswith("num_batches_tracked"):
            report.ignored.append(key)
        else:
            raise CheckpointError(
                f"checkpoint {file}: unexpected key {key!r} is not part of this model; "
                "is it a checkpoint for another backbone?"
            )

    for key in target:
        if key in to_load or key.endswith("num_batches_tracked"):
            continue  # old files (PyTorch < 0.4.1) have no BN counters
        if _has_prefix(key, head_prefixes):
            if not any(s.startswith(key + " ") for s in report.skipped_head):
                report.missing_head.append(key)
            continue
        raise CheckpointError(f"checkpoint {file}: backbone key {key!r} is missing; is it for another backbone?")

    with torch.no_grad():
        for key, value in to_load.items():
            target[key].copy_(value.to(dtype=target[key].dtype))
    report.loaded = sorted(to_load)
    LOG.info("pretrained weights: %s", report.summary())
    return report


__all__ = ["LoadReport", "load_pretrained", "read_state_dict"]


ModelT = TypeVar("ModelT", bound=nn.Module)


def with_pretrained(
    model: ModelT, pretrained: str | Path | None, *, head_prefixes: tuple[str, ...], ignorable: tuple[str, ...] = ()
) -> ModelT:
    """``model`` with ``pretrained`` loaded (:func:`load_pretrained`) when a path is given; the
    :class:`LoadReport` is kept as ``model.pretrained_report`` for the CLI to print."""
    if pretrained:
        model.pretrained_report = load_pretrained(  # type: ignore[attr-defined]
            model, pretrained, head_prefixes=head_prefixes, ignorable=ignorable
        )
    return model
