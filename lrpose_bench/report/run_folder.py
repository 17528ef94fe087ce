"""Reading a run folder written by ``lrpose_bench.engine.cell`` (the report's only input).

A run folder holds ``run.json`` and one folder per cell (``metrics.json``, ``predictions.json``,
``displacements.npz``, ``train_log.csv``, ``status.json``). Cells may be complete, failed or still
running; the report shows every one of them, so nothing here raises for a broken cell: a cell whose
files cannot be read is returned with ``state="failed"`` and the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lrpose_bench.errors import UserError
from lrpose_bench.resolution import Resolution
from lrpose_bench.store import read_json, read_status

#: optional run-level files other commands may add (rendered when present)
EXTRA_FILES: tuple[str, ...] = ("oracle.json", "cross_resolution.json", "bench.json", "sr_quality.json")


@dataclass
class Cell:
    """One cell folder, parsed."""

    id: str
    folder: Path
    state: str  # complete | failed | running | missing
    method: str
    backbone: str
    resolution: str
    seed: int
    ablation: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # metrics.json, empty when absent
    reason: str | None = None

    @property
    def complete(self) -> bool:
        return self.state == "complete" and bool(self.info.get("metrics"))

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.info.get("metrics") or {})

    @property
    def pixels(self) -> int:
        try:
            res = Resolution.parse(self.resolution)
        except UserError:
            return 0
        return res.height * res.width

    @property
    def ablation_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(self.ablation.items()))

    @property
    def label(self) -> str:
        """Short label: ``cal (offset_mask=binary)``."""
        return f"{self.method} ({self.ablation_text})" if self.ablation else self.method

    def method_params(self) -> dict[str, Any]:
        return dict((self.info.get("method") or {}).get("params") or {})

    def train_log(self) -> pd.DataFrame | None:
        path = self.folder / "train_log.csv"
        if not path.is_file():
            return None
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError):
            return None
        return frame if {"epoch", "loss"} <= set(frame.columns) else None


@dataclass
class RunData:
    """Everything the report reads from a run folder."""

    folder: Path
    run: dict[str, Any]
    cells: list[Cell]
    extras: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.run.get("config") or {})

    @property
    def dataset(self) -> str:
        for cell in self.cells:
            if cell.info.get("cell", {}).get("dataset"):
                return str(cell.info["cell"]["dataset"])
        return str(self.run.get("dataset") or "unknown data set")

    @property
    def eval_split(self) -> str:
        """Label of the data our numbers are on (``SynthPose val``, ``COCO val2017``)."""
        for cell in self.cells:
            split = cell.info.get("cell", {}).get("eval_split")
            if split:
                return str(split)
        return str(self.run.get("eval_split") or self.dataset)

    def complete_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.complete]


def parse_cell_id(cell_id: str) -> dict[str, Any]:
    """Fields of a cell id ``method[@k=v...]__backbone__HxW__sN`` (``CellSpec.cell_id``)."""
    parts = cell_id.split("__")
    if len(parts) != 4 or not parts[3].startswith("s"):
        raise ValueError(f"not a cell id: {cell_id!r}")
    head, backbone, resolution, seed = parts
    method, *pairs = head.split("@")
    ablation: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        ablation[key] = _scalar(value)
    return {
        "method": method,
        "backbone": backbone,
        "resolution": resolution,
        "seed": int(seed[1:]),
        "ablation": ablation,
    }


def _scalar(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def _read_cell(folder: Path) -> Cell:
    try:
        fields = parse_cell_id(folder.name)
    except ValueError:
        fields = {"method": folder.name, "backbone": "?", "resolution": "?", "seed": 0, "ablation": {}}
    status = read_status(folder)
    state = str(status.get("state", "missing"))
    reason = status.get("reason")
    info: dict[str, Any] = {}
    metrics_path = folder / "metrics.json"
    if metrics_path.is_file():
        try:
            info = read_json(metrics_path)
        except (OSError, json.JSONDecodeError) as error:
            state, reason = "failed", f"metrics.json unreadable: {error}"
        else:
            described = info.get("cell") or {}
            for key in ("method", "backbone", "resolution", "seed"):
                if key in described:
                    fields[key] = described[key]
            fields["ablation"] = dict(described.get("ablation") or fields["ablation"])
            if state in ("missing", "unknown"):
                state = "complete"
    elif state == "complete":
        state, reason = "failed", "status says complete but metrics.json is missing"
    if state not in ("complete", "failed", "running"):
        state = "failed" if state == "unknown" else state
    return Cell(id=folder.name, folder=folder, state=state, reason=reason, info=info, **fields)


def load_run(run_dir: Path | str) -> RunData:
    """Parse ``run_dir``; :class:`UserError` when it is not a run folder."""
    folder = Path(run_dir).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass a run folder written by 'lrpose-bench run --out DIR'")
    run_path = folder / "run.json"
    run: dict[str, Any] = {}
    if run_path.is_file():
        try:
            run = read_json(run_path)
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(
                f"{run_path} is not valid JSON ({error}); re-run 'lrpose-bench run' on this folder"
            ) from None
    listed = [str(c) for c in run.get("cells") or []]
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and _looks_like_cell(p))
    names = listed + [n for n in found if n not in listed]
    if not run and not found:
        raise UserError(
            f"{folder} is not a run folder (no run.json and no cell folders with metrics.json); "
            "pass the --out folder of 'lrpose-bench run'"
        )
    cells = [_read_cell(folder / name) for name in names]
    extras: dict[str, Any] = {}
    for name in EXTRA_FILES:
        path = folder / name
        if path.is_file():
            try:
                extras[name] = read_json(path)
            except (OSError, json.JSONDecodeError):
                extras[name] = None
    return RunData(folder=folder, run=run, cells=cells, extras=extras)


def _looks_like_cell(path: Path) -> bool:
    return (path / "metrics.json").is_file() or (path / "status.json").is_file()
