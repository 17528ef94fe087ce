"""Fixture factory for the report tests: fake run folders written by code (no binary fixtures).

``make_run(root, specs)`` writes what ``lrpose_bench.engine.cell`` writes: ``run.json`` and per cell
``metrics.json`` (metrics computed by pycocotools on the cell's predictions), ``predictions.json``,
``displacements.npz``, ``train_log.csv`` and ``status.json``, on a small COCO ground truth
(``gt.json``) generated here. Failed cells get only ``status.json``. The tests in this module check the
factory itself (its metrics really are pycocotools' on its predictions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lrpose_bench.evaluation.coco_metric import evaluate_keypoints
from lrpose_bench.keypoints import NUM_JOINTS
from lrpose_bench.store import write_json, write_npz, write_status, write_text


@dataclass
class CellSpec:
    method: str
    resolution: str = "64x48"
    backbone: str = "hrnet-w8"
    seed: int = 0
    ablation: dict[str, Any] = field(default_factory=dict)
    noise: float = 4.0  # prediction noise, image px (bigger = lower AP)
    state: str = "complete"
    params: dict[str, Any] = field(default_factory=dict)  # method params recorded in metrics.json

    @property
    def cell_id(self) -> str:
        ablation = "".join(f"@{k}={v}" for k, v in sorted(self.ablation.items()))
        return f"{self.method}{ablation}__{self.backbone}__{self.resolution}__s{self.seed}"


def make_gt(num_images: int = 40, persons: int = 2, seed: int = 0) -> dict[str, Any]:
    """A COCO person-keypoints ground truth with stick-figure-like joint layouts (no image files)."""
    rng = np.random.default_rng(seed)
    doc: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}],
    }
    ann_id = 1
    for image_id in range(1, num_images + 1):
        doc["images"].append({"id": image_id, "file_name": f"{image_id:06d}.png", "height": 480, "width": 640})
        for _ in range(persons):
            w, h = rng.uniform(60, 160), rng.uniform(150, 330)
            x0, y0 = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            joints = np.stack(
                [x0 + rng.uniform(0.1, 0.9, NUM_JOINTS) * w, y0 + rng.uniform(0.05, 0.95, NUM_JOINTS) * h], axis=1
            )
            vis = np.where(rng.random(NUM_JOINTS) < 0.1, 0, 2)
            kps = []
            for (x, y), v in zip(joints, vis):
                kps += [float(x), float(y), int(v)] if v else [0.0, 0.0, 0]
            doc["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [float(x0), float(y0), float(w), float(h)],
                    "area": float(w * h * 0.7),
                    "keypoints": kps,
                    "num_keypoints": int((vis > 0).sum()),
                }
            )
            ann_id += 1
    return doc


def noisy_predictions(gt: dict[str, Any], noise: float, seed: int) -> list[dict[str, Any]]:
    """One prediction per ground-truth person: joints + N(0, noise²) px, random instance scores."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in gt["annotations"]:
        k = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
        k[:, :2] += rng.normal(0.0, noise, size=(NUM_JOINTS, 2))
        k[:, 2] = rng.uniform(0.3, 1.0, NUM_JOINTS)
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": k.ravel().tolist(),
                "score": float(rng.uniform(0.5, 1.0)),
            }
        )
    return results


def _displacements(spec: CellSpec, instances: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    height = int(spec.resolution.split("x")[0]) // 4
    width = int(spec.resolution.split("x")[1]) // 4
    scale = spec.noise * 0.15 * 12.0 / max(width, 1)  # heatmap px; lower resolution → bigger error
    coarse = np.round(rng.normal(0, scale, size=(instances, NUM_JOINTS, 2)) * 2) / 2 + rng.uniform(
        -0.5, 0.5, (instances, NUM_JOINTS, 2)
    )
    final = coarse * (0.3 if spec.method in ("udp", "cal") else 0.7)
    return {
        "coarse": coarse.astype(np.float32),
        "final": final.astype(np.float32),
        "visible": rng.random((instances, NUM_JOINTS)) > 0.1,
        "keypoint_id": np.broadcast_to(np.arange(NUM_JOINTS), (instances, NUM_JOINTS)).astype(np.int16),
        "image_id": rng.integers(1, 50, instances).astype(np.int64),
        "heatmap_size": np.array([height, width]),
    }


def make_run(
    root: Path,
    specs: list[CellSpec],
    *,
    num_images: int = 40,
    persons: int = 2,
    displacement_instances: int | None = None,
    eval_split: str = "SynthPose val",
    config: dict[str, Any] | None = None,
    epochs: int = 6,
) -> Path:
    """Write a fake run folder with ``specs`` cells into ``root``; returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    gt = make_gt(num_images, persons, seed=0)
    gt_path = root / "gt.json"
    write_json(gt_path, gt)
    env = {"python": "3.11", "torch": "2.14.1", "device": "cpu (x86_64)", "threads": 1}
    cfg = {
        "profile": "quick",
        "seed": 0,
        "eval": {"bootstrap_samples": 50},
        "report": {"formats": ["html", "latex", "csv", "json"], "displacement_bins": [0.0, 1.0, 2.0, 3.0]},
    }
    cfg.update(config or {})
    write_json(
        root / "run.json",
        {
            "started": "2026-01-01T00:00:00+00:00",
            "config": cfg,
            "cells": [s.cell_id for s in specs],
            "dataset": "SynthPose",
            "eval_split": eval_split,
            "environment": env,
            "argv": ["run", "--methods", "x"],
        },
    )
    instances = displacement_instances or len(gt["annotations"])
    for i, spec in enumerate(specs):
        folder = root / spec.cell_id
        folder.mkdir(parents=True, exist_ok=True)
        if spec.state != "complete":
            write_status(folder, spec.state, reason="loss became NaN at epoch 3" if spec.state == "failed" else None)
            continue
        seed = 1000 * i + 17
        results = noisy_predictions(gt, spec.noise, seed)
        metrics = evaluate_keypoints(gt, [dict(r) for r in results])
        floor = evaluate_keypoints(gt, noisy_predictions(gt, 40.0, seed + 1))
        write_json(folder / "predictions.json", results)
        rng = np.random.default_rng(seed)
        write_npz(folder / "displacements.npz", **_displacements(spec, instances, rng))
        log_rows = ["epoch,stage,lr,iterations,seconds,images_per_s,loss,loss_heatmap"]
        for epoch in range(epochs):
            loss = (1.0 + spec.noise / 10) * np.exp(-0.3 * epoch)
            log_rows.append(f"{epoch},stage1,0.001,10,1.5,200.0,{loss:.5f},{0.8 * loss:.5f}")
        write_text(folder / "train_log.csv", "\n".join(log_rows) + "\n")
        width = int(spec.backbone.split("-w")[-1]) if "-w" in spec.backbone else 50
        info = {
            "cell": {
                "id": spec.cell_id,
                "method": spec.method,
                "backbone": spec.backbone,
                "resolution": spec.resolution,
                "seed": spec.seed,
                "ablation": spec.ablation,
                "dataset": "SynthPose",
                "eval_split": eval_split,
                "profile": "quick",
                "degrade": "clean",
            },
            "metrics": metrics,
            "floor": floor,
            "model": {
                "params": 250_000 * width + (1000 if spec.method in ("udp", "cal") else 0),
                "gmacs": 0.01 * width * int(spec.resolution.split("x")[0]) / 64,
                "head_channels": 51 if spec.method in ("udp", "cal") else 17,
                "train_resolution": spec.resolution,
            },
            "method": {
                "codec": "fake",
                "loss": "fake",
                "description": "fake",
                "params": spec.params,
                "stages": [{"name": "stage1", "epochs": epochs, "index": 0}],
            },
            "timing": {
                "train_s": 12.5,
                "eval_s": 1.0,
                "train_images_per_s": 100.0,
                "eval_images_per_s": 300.0,
                "resumed_from_epoch": None,
            },
            "gt_annotations": str(gt_path),
            "num_instances": len(gt["annotations"]),
            "environment": env,
        }
        write_json(folder / "metrics.json", info)
        write_status(folder, "complete")
    return root


def standard_specs() -> list[CellSpec]:
    """Four methods at two input sizes, one failed cell, CAL ablations with a reference row."""
    noise = {"hrnet": 9.0, "dark": 6.0, "udp": 5.0, "cal": 3.0}
    specs = [
        CellSpec(m, r, noise=n * (1.5 if r == "64x48" else 1.0), params={"offset_mask": "mgm"} if m == "cal" else {})
        for r in ("64x48", "128x96")
        for m, n in noise.items()
    ]
    specs.append(CellSpec("cal", "128x96", ablation={"offset_mask": "binary"}, noise=4.0))
    specs.append(CellSpec("spsr+udp", "64x48", state="failed"))
    return specs


# ------------------------------------------------------------------------- tests of the factory
def test_factory_metrics_are_pycocotools_scores(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", [CellSpec("udp", noise=2.0), CellSpec("hrnet", noise=12.0)], num_images=10)
    gt = json.loads((root / "gt.json").read_text())
    for spec in ("udp__hrnet-w8__64x48__s0", "hrnet__hrnet-w8__64x48__s0"):
        info = json.loads((root / spec / "metrics.json").read_text())
        preds = json.loads((root / spec / "predictions.json").read_text())
        assert info["metrics"]["AP"] == pytest.approx(evaluate_keypoints(gt, preds)["AP"])
    udp = json.loads((root / "udp__hrnet-w8__64x48__s0" / "metrics.json").read_text())["metrics"]["AP"]
    hrnet = json.loads((root / "hrnet__hrnet-w8__64x48__s0" / "metrics.json").read_text())["metrics"]["AP"]
    assert udp > hrnet  # less noise, higher AP
