"""Training state: the format of a cell's ``checkpoint.pt`` (atomic, ``weights_only``-loadable,
self-describing) and the RNG states it holds. When it is saved and restored is the trainer's
:class:`~lrpose_bench.engine.trainer.Checkpointer`; pretrained backbone weights are
:mod:`lrpose_bench.models.pretrained`.

A checkpoint holds only tensors and plain Python values (no pickled classes), so it loads with
``torch.load(..., weights_only=True)``. Its ``meta`` names the method, backbone and resolution, so a
checkpoint from another cell is refused with a clear message rather than half-loaded.

What a training checkpoint holds, and why some things are absent:

* ``model``, ``optimizer`` (Adam moments and step counts) state dicts;
* no LR-scheduler state: the learning rate is a pure function of the epoch
  (:func:`lrpose_bench.engine.trainer.learning_rate`), recomputed on resume;
* no AMP grad-scaler state: CPU training runs in fp32 and CUDA autocast uses bfloat16, whose range
  needs no loss scaling, so there is no ``GradScaler``;
* ``rng``: Python, numpy, torch and (when present) CUDA generator states;
* ``epoch``/``iteration`` (the next batch to run), the method's training ``stage`` (CAL: Eq. 14
  stage, then Eq. 15 stage) and ``sampler`` (seed, epoch, position, data-set size, batch size);
* ``partial``: loss sums, seconds and CPU threads of a half-finished epoch, so the resumed
  ``train_log.csv`` row is the uninterrupted one and the cell's training time loses nothing.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lrpose_bench.errors import CheckpointError
from lrpose_bench.store import atomic_write

FORMAT = "lrpose-bench-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors/plain values."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": {
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write a checkpoint (temp file + fsync + rename)."""
    payload = dict(payload)
    payload.setdefault("meta", {})
    payload["meta"] = {**payload["meta"], "format": FORMAT, "version": VERSION}
    atomic_write(path, lambda f: torch.save(payload, f), size_hint=_tensor_bytes(payload))


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a checkpoint payload: its size on disk, near enough to say how much
    space a full disk needs freed (the first checkpoint of a cell has no previous file to go by)."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _load_failure(error: BaseException) -> str:
    """One short clause for why ``torch.load`` failed (torch's own messages run to paragraphs)."""
    text = str(error).strip()
    if "Weights only load failed" in text:
        if "Unsupported global" in text or "safe_globals" in text:
            return "it holds pickled Python objects, which are never loaded from user files (weights_only=True)"
        return "not a file written by torch.save"
    if isinstance(error, EOFError) or "EOF" in text:
        return "truncated: the file ends early"
    if "zip archive" in text or isinstance(error, zipfile.BadZipFile):
        return "truncated or corrupt: not a complete torch zip archive"
    first = text.splitlines()[0].split(". ")[0] if text else type(error).__name__
    return f"corrupt: {first[:120]}"


def load_checkpoint(path: Path, expect: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load a checkpoint safely; check that it is ours and matches ``expect`` (method, backbone, ...)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({_load_failure(error)}); delete it to retrain, or pass another file"
        ) from error
    meta = payload.get("meta") if isinstance(payload, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} is not an lrpose-bench training checkpoint "
            "(official backbone weights go to --set model.pretrained=FILE)"
        )
    for key, value in (expect or {}).items():
        if meta.get(key) != value:
            raise CheckpointError(
                f"checkpoint {path} is for {key} {meta.get(key)!r}, not {value!r}; "
                "use the checkpoint of this cell or another output folder"
            )
    return payload
