"""``lrpose-bench evaluate --checkpoint CELL [--res LIST]``: re-evaluate a trained cell, also at
other input resolutions (cross-resolution evaluation).

At a test resolution different from the training one, the person crop is taken at the training
input size, reduced to the test resolution (antialiased area-style resize) and resized back to the
training input, so the network sees exactly the information a ``test``-sized crop carries while the
coordinate frame (and back-projection) stays the training crop's.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from lrpose_bench.config import BenchConfig, from_mapping
from lrpose_bench.data.dataset import ImageCache, PoseDataset
from lrpose_bench.data.sources import load_data
from lrpose_bench.engine.cell import CellSpec, build_cell_model, build_method, score_predictions
from lrpose_bench.engine.checkpoint import load_checkpoint
from lrpose_bench.engine.evaluator import predict
from lrpose_bench.engine.trainer import resolve_device
from lrpose_bench.errors import CheckpointError, UserError
from lrpose_bench.resolution import Resolution, parse_resolution_list
from lrpose_bench.store import read_json, write_json


def resample_transform(test: Resolution, train: Resolution) -> Callable[[Tensor], Tensor] | None:
    """Reduce a training-size crop batch to ``test`` and bring it back to ``train`` (None if equal)."""
    if test == train:
        return None

    def transform(images: Tensor) -> Tensor:
        small = F.interpolate(images, size=test.size, mode="bilinear", align_corners=False, antialias=True)
        return F.interpolate(small, size=train.size, mode="bilinear", align_corners=False)

    return transform


def load_cell(cell_dir: Path) -> tuple[CellSpec, BenchConfig, dict[str, Any]]:
    """Spec and configuration of a trained cell folder."""
    config_path = cell_dir / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"{cell_dir} is not a cell folder (no config.yaml); pass a folder written by 'lrpose-bench run'")
    resolved = yaml.safe_load(config_path.read_text())
    cell = resolved["cell"]
    spec = CellSpec(cell["method"], cell["backbone"], Resolution.parse(cell["resolution"]), int(cell["seed"]),
                    tuple(sorted(cell.get("ablation", {}).items())))
    return spec, from_mapping(BenchConfig, resolved["config"]), resolved


def evaluate_cell(cell_dir: Path, resolutions: list[Resolution] | None, progress: bool = True,
                  cfg_override: BenchConfig | None = None) -> list[dict[str, Any]]:
    """Evaluate a trained cell at each resolution; returns one metrics row per test resolution."""
    spec, cfg, _ = load_cell(cell_dir)
    cfg = cfg_override or cfg
    method = build_method(spec, cfg)
    train_res = method.train_resolution()
    model = build_cell_model(method if train_res == spec.resolution else build_method(spec, cfg, train_res), spec, cfg)
    payload = load_checkpoint(cell_dir / "checkpoint.pt",
                              expect={"method": spec.method, "backbone": spec.backbone, "resolution": str(spec.resolution)})
    if not payload["meta"].get("complete"):
        raise CheckpointError(f"checkpoint in {cell_dir} is from an unfinished training; resume it with 'lrpose-bench run' first")
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        first = str(error).strip().splitlines()[0][:200]
        raise CheckpointError(f"checkpoint in {cell_dir} does not fit the cell's model ({first}); "
                              "it was written by another configuration") from None
    device = resolve_device(cfg.train.device)
    model.to(device)
    bundle = load_data(cfg.data, progress=progress)
    cache = ImageCache(cfg.data.image_cache_mb)
    inner = method if train_res == spec.resolution else build_method(spec, cfg, train_res)
    rows = []
    for test_res in resolutions or [spec.resolution]:
        dataset = PoseDataset(bundle.val, inner, train_res, train=False, box_padding=cfg.data.box_padding, image_cache=cache)
        transform = resample_transform(test_res, spec.resolution)
        method_transform = getattr(method, "eval_input_transform", lambda: None)()
        if transform is not None and method_transform is not None:
            first, second = transform, method_transform
            transform = lambda x: second(first(x))  # noqa: E731
        elif method_transform is not None:
            transform = method_transform
        preds = predict(model, inner, dataset, batch_size=cfg.eval.batch_size, flip_test=cfg.eval.flip_test,
                        device=device, progress=progress, input_transform=transform)
        metrics, _ = score_predictions(bundle, preds, cfg)
        rows.append({"cell": spec.cell_id, "method": spec.method, "backbone": spec.backbone,
                     "train_resolution": str(spec.resolution), "test_resolution": str(test_res),
                     "eval_split": bundle.eval_label, "degrade": cfg.degrade, **metrics})
    return rows


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """CLI entry: evaluate one cell folder (or its checkpoint.pt)."""
    target = Path(args.checkpoint)
    cell_dir = target.parent if target.suffix == ".pt" else target
    resolutions = parse_resolution_list(args.res) if args.res else None
    rows = evaluate_cell(cell_dir, resolutions, progress=not args.no_progress)
    out = Path(args.out) if args.out else cell_dir
    write_json(out / "evaluation.json", rows)
    run_dir = cell_dir.parent
    if (run_dir / "run.json").is_file() and len(rows) > 1 or (resolutions and len(resolutions) > 1):
        path = run_dir / "cross_resolution.json"
        existing = read_json(path) if path.is_file() else []
        keep = [r for r in existing if r.get("cell") != rows[0]["cell"]]
        write_json(path, keep + rows)
    for row in rows:
        print(f"{row['cell']}  test {row['test_resolution']}: AP {100 * row['AP']:.1f}  AP50 {100 * row['AP50']:.1f}  "
              f"AR {100 * row['AR']:.1f}  ({row['eval_split']})")
    return 0
