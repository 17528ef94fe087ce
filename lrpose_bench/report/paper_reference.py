"""The paper's numbers: ``configs/paper_reference.yaml`` read, checked and queried.

The file holds the published numbers the report prints beside ours (one entry per method, backbone,
input size and data set, with its source), the mapping of our method and backbone names to the
paper's, the paper's row order, and the CAL ablation tables (T3–T7). :func:`load_reference` refuses
an unknown data set, an unknown metric or a missing field, naming the entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lrpose_bench.config import config_dir
from lrpose_bench.errors import ConfigError
from lrpose_bench.resolution import Resolution

#: metric columns of the paper's tables (OKS AP/AR ×100)
PAPER_METRICS: tuple[str, ...] = ("AP", "AP50", "AP75", "APM", "APL", "AR")


@dataclass(frozen=True)
class PaperEntry:
    source: str
    dataset: str  # display label, e.g. "COCO val2017"
    method: str  # paper name, e.g. "HRNet"
    backbone: str  # paper name, e.g. "HRNet-W32"
    input: str  # "128x96"
    params: float | None
    gflops: float | None
    metrics: dict[str, float]


@dataclass
class PaperReference:
    """``configs/paper_reference.yaml``: published numbers and the name mappings."""

    datasets: dict[str, str]
    method_names: list[dict[str, str]]
    method_order: list[str]
    backbones: dict[str, dict[str, Any]]
    entries: list[PaperEntry]
    ablations: list[dict[str, Any]]

    def paper_method(self, method: str, backbone: str) -> str | None:
        for line in self.method_names:
            if line["method"] == method and backbone.startswith(line.get("family", "")):
                return line["paper"]
        return None

    def paper_backbone(self, backbone: str) -> tuple[str, bool] | None:
        spec = self.backbones.get(backbone)
        return (str(spec["paper"]), bool(spec.get("proxy", False))) if spec else None

    def lookup(self, method: str, backbone: str, resolution: str) -> dict[str, tuple[PaperEntry, bool]]:
        """First matching entry per data set label, with whether the backbone is a proxy."""
        name = self.paper_method(method, backbone)
        mapped = self.paper_backbone(backbone)
        if name is None or mapped is None:
            return {}
        paper_backbone, proxy = mapped
        found: dict[str, tuple[PaperEntry, bool]] = {}
        for entry in self.entries:
            if (entry.method, entry.backbone, entry.input) == (name, paper_backbone, resolution):
                found.setdefault(entry.dataset, (entry, proxy))
        return found

    def method_rank(self, method: str) -> int:
        return self.method_order.index(method) if method in self.method_order else len(self.method_order)


def load_reference(path: Path | str | None = None) -> PaperReference:
    """Read and check ``paper_reference.yaml`` (default: the packaged ``configs/`` copy)."""
    path = Path(path) if path is not None else config_dir() / "paper_reference.yaml"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read paper reference ({error})") from None
    datasets = dict(data.get("datasets") or {})
    names = list(data.get("metric_names") or PAPER_METRICS)

    def metrics_of(raw: Any, where: str) -> dict[str, float]:
        if isinstance(raw, dict):
            values = {str(k): float(v) for k, v in raw.items()}
        elif isinstance(raw, list) and len(raw) == len(names):
            values = {k: float(v) for k, v in zip(names, raw)}
        else:
            raise ConfigError(f"{path}: {where}: 'metrics' must be a list of {len(names)} numbers or a mapping")
        unknown = set(values) - set(PAPER_METRICS)
        if unknown:
            raise ConfigError(f"{path}: {where}: unknown metrics {sorted(unknown)}")
        return values

    def dataset_of(key: Any, where: str) -> str:
        if key not in datasets:
            raise ConfigError(f"{path}: {where}: dataset {key!r} is not one of {sorted(datasets)}")
        return datasets[key]

    entries = []
    for i, raw in enumerate(data.get("entries") or []):
        where = f"entries[{i}]"
        try:
            Resolution.parse(str(raw["input"]))
            entries.append(
                PaperEntry(
                    source=str(raw["source"]),
                    dataset=dataset_of(raw["dataset"], where),
                    method=str(raw["method"]),
                    backbone=str(raw["backbone"]),
                    input=str(raw["input"]),
                    params=_opt_float(raw.get("params")),
                    gflops=_opt_float(raw.get("gflops")),
                    metrics=metrics_of(raw["metrics"], where),
                )
            )
        except KeyError as error:
            raise ConfigError(f"{path}: {where} lacks field {error}") from None
    ablations = []
    for i, spec in enumerate(data.get("ablations") or []):
        where = f"ablations[{i}]"
        rows = [
            {**row, "metrics": metrics_of(row["metrics"], f"{where}.rows[{j}]"), "input": str(row["input"])}
            for j, row in enumerate(spec.get("rows") or [])
        ]
        ablations.append({**spec, "dataset": dataset_of(spec.get("dataset"), where), "rows": rows})
    return PaperReference(
        datasets=datasets,
        method_names=list(data.get("method_names") or []),
        method_order=list(data.get("method_order") or []),
        backbones=dict(data.get("backbones") or {}),
        entries=entries,
        ablations=ablations,
    )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
