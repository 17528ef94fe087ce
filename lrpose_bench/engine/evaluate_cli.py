"""``lrpose-bench evaluate --checkpoint CELL [--res LIST]``: re-evaluate a trained cell, also at
other input resolutions (cross-resolution evaluation).

At a test resolution different from the training one, the person crop is taken at the training
input size, reduced to the test resolution (antialiased area-style resize) and resized back to the
training input, so the network sees exactly the information a ``test``-sized crop carries while the
coordinate frame (and back-projection) stays the training crop's.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from lrpose_bench.config import BenchConfig, from_mapping
from lrpose_bench.data.dataset import ImageCache
from lrpose_bench.data.degrade import describe_preset
from lrpose_bench.data.sources import load_data
from lrpose_bench.engine.cell import CellSpec, build_cell_model, build_method, score_predictions
from lrpose_bench.engine.distributed import resolve_device
from lrpose_bench.engine.evaluator import build_eval_dataset, predict
from lrpose_bench.engine.train_state import load_checkpoint
from lrpose_bench.errors import CheckpointError, UserError
from lrpose_bench.method import Method
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
    if not cell_dir.exists():
        raise UserError(
            f"{cell_dir} not found; pass a cell folder written by 'lrpose-bench run' "
            "(e.g. runs/quick/hrnet__hrnet-w8__64x48__s0) or its checkpoint.pt"
        )
    if not config_path.is_file():
        raise UserError(
            f"{cell_dir} is not a cell folder (no config.yaml); pass a folder written by 'lrpose-bench run'"
        )
    try:
        resolved = yaml.safe_load(config_path.read_text())
        cell = resolved["cell"]
        spec = CellSpec(
            cell["method"],
            cell["backbone"],
            Resolution.parse(cell["resolution"]),
            int(cell["seed"]),
            tuple(sorted(cell.get("ablation", {}).items())),
        )
        config = resolved["config"]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise UserError(
            f"{config_path} is corrupt ({type(error).__name__}); rerun 'lrpose-bench run' on its "
            "output folder to rewrite it"
        ) from None
    return spec, from_mapping(BenchConfig, config), resolved


def evaluate_cell(
    cell_dir: Path,
    resolutions: list[Resolution] | None,
    progress: bool = True,
    cfg_override: BenchConfig | None = None,
    results_sink: list[list[dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate a trained cell at each resolution; returns one metrics row per test resolution.

    One method instance decodes and transforms, as in the cell that trained it; its network works at
    ``method.train_resolution()`` (SR+pose: the pose network's size). ``results_sink``, when given,
    receives the scored COCO results of each test resolution (in the rows' order)."""
    spec, cfg, _ = load_cell(cell_dir)
    train_degrade = cfg.degrade
    cfg = cfg_override or cfg
    method = build_method(spec, cfg)
    train_res = method.train_resolution()
    model = build_cell_model(method, spec, cfg)
    load_trained_weights(model, cell_dir, spec)
    device = resolve_device(cfg.train.device)
    model.to(device)
    bundle = load_data(cfg.data, progress=progress)
    cache = ImageCache(cfg.data.image_cache_mb)
    _refuse_pipeline_cross_resolution(spec, train_res, resolutions)
    rows = []
    for test_res in resolutions or [spec.resolution]:
        dataset = build_eval_dataset(bundle.val, method, train_res, cfg, cache)
        preds = predict(
            model,
            method,
            dataset,
            batch_size=cfg.eval.batch_size,
            flip_test=cfg.eval.flip_test,
            device=device,
            progress=progress,
            input_transform=eval_transform(method, test_res, train_res, spec.resolution),
        )
        metrics, results = score_predictions(bundle, preds, cfg)
        if results_sink is not None:
            results_sink.append(results)
        rows.append(_evaluation_row(spec, test_res, bundle.eval_label, cfg, train_degrade, metrics))
    return rows


def load_trained_weights(model: torch.nn.Module, cell_dir: Path, spec: CellSpec) -> None:
    """Load the cell's finished ``checkpoint.pt`` into ``model``; an unfinished training, another
    cell's checkpoint or one that does not fit is a :class:`CheckpointError` line."""
    payload = load_checkpoint(
        cell_dir / "checkpoint.pt",
        expect={"method": spec.method, "backbone": spec.backbone, "resolution": str(spec.resolution)},
    )
    if not payload["meta"].get("complete"):
        raise CheckpointError(
            f"checkpoint in {cell_dir} is from an unfinished training; resume it with 'lrpose-bench run' first"
        )
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        first = str(error).strip().splitlines()[0][:200]
        raise CheckpointError(
            f"checkpoint in {cell_dir} does not fit the cell's model ({first}); it was written by another configuration"
        ) from None


def _refuse_pipeline_cross_resolution(
    spec: CellSpec, train_res: Resolution, resolutions: list[Resolution] | None
) -> None:
    """A pipeline method (its network trains at another size than the cell's, behind a fixed
    reconstruction) has no cross-resolution protocol: refuse a test size other than the cell's."""
    if train_res != spec.resolution and any(r != spec.resolution for r in resolutions or []):
        raise UserError(
            f"cross-resolution evaluation is not defined for {spec.method!r} (its pose network works at "
            f"{train_res} behind a fixed x{train_res.height // spec.resolution.height} reconstruction); "
            f"evaluate it at {spec.resolution} only"
        )


def eval_transform(
    method: Method, test_res: Resolution, train_res: Resolution, cell_res: Resolution
) -> Callable[[Tensor], Tensor] | None:
    """The batch transform before the network: the cross-resolution resample (test size ≠ training
    size, plain methods only), then the method's own (SR+pose: super-resolution); ``None`` if neither."""
    resample = resample_transform(test_res, train_res) if train_res == cell_res else None
    method_transform = method.eval_input_transform()
    if resample is not None and method_transform is not None:
        return lambda x, first=resample, second=method_transform: second(first(x))
    if method_transform is not None:
        return method_transform
    return resample


def _evaluation_row(
    spec: CellSpec,
    test_res: Resolution,
    eval_label: str,
    cfg: BenchConfig,
    train_degrade: str,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """One ``evaluation.json`` row: the cell, the test resolution and protocol, and its metrics."""
    return {
        "cell": spec.cell_id,
        "method": spec.method,
        "backbone": spec.backbone,
        "train_resolution": str(spec.resolution),
        "test_resolution": str(test_res),
        "eval_split": eval_label,
        "degrade": cfg.degrade,
        "degrade_version": describe_preset(cfg.degrade)["version"],
        "train_degrade": train_degrade,
        "flip_test": cfg.eval.flip_test,
        **metrics,
    }


def _protocol_override(
    cell_dir: Path,
    resolutions: list[Resolution] | None,
    *,
    degrade: str | None,
    device: str | None,
    split: str | None,
    no_flip: bool,
) -> BenchConfig | None:
    """The cell's configuration with ``evaluate``'s protocol options applied (``--degrade``,
    ``--device``, ``--split``, ``--no-flip-test``), or ``None`` when none is given. The
    cross-resolution matrix holds the cell's own split, flip-tested: ``--split`` and
    ``--no-flip-test`` are refused with ``--res``."""
    if split and resolutions:
        raise UserError(
            f"--split {split} with --res: the cross-resolution matrix is scored on the cell's own split; "
            "evaluate another split without --res"
        )
    if no_flip and resolutions:
        raise UserError(
            "--no-flip-test with --res: the cross-resolution matrix is flip-tested, as the cell was scored; "
            "evaluate without the flip test at the cell's own size (drop --res)"
        )
    if not (degrade or device or split or no_flip):
        return None
    _, cfg, _ = load_cell(cell_dir)
    return dataclasses.replace(
        cfg,
        degrade=degrade or cfg.degrade,
        train=dataclasses.replace(cfg.train, device=device or cfg.train.device),
        data=dataclasses.replace(cfg.data, eval_split=split or cfg.data.eval_split),
        eval=dataclasses.replace(cfg.eval, flip_test=cfg.eval.flip_test and not no_flip),
    )


def evaluate_checkpoint(args: argparse.Namespace) -> int:
    """CLI entry: evaluate one cell folder (or its checkpoint.pt), or a published model (``--weights``)."""
    if getattr(args, "weights", None):  # published checkpoints (engine/published_weights.py)
        from lrpose_bench.engine.published_weights import evaluate_published

        return evaluate_published(args)
    if not getattr(args, "checkpoint", None):
        raise UserError(
            "evaluate: pass --checkpoint CELL (a trained cell folder) or --weights FILE --format "
            "hrnet-official|mmpose (a published model)"
        )
    from lrpose_bench.engine.published_weights import refuse_weights_only_options

    refuse_weights_only_options(args)  # --format, --data, --set, ... apply to --weights only
    target = Path(args.checkpoint)
    cell_dir = target.parent if target.suffix == ".pt" else target
    resolutions = parse_resolution_list(args.res) if args.res else None
    backbone = getattr(args, "backbone", None)
    if backbone:  # the cell's own backbone is always used: a different one must not pass unnoticed
        spec, _, _ = load_cell(cell_dir)
        if backbone != spec.backbone:
            raise UserError(
                f"--backbone {backbone}: cell {spec.cell_id} was trained with backbone {spec.backbone!r}; "
                "drop --backbone (evaluate uses the cell's own), or pass a cell of that backbone"
            )
    split = getattr(args, "split", None)
    no_flip = bool(getattr(args, "no_flip_test", False))
    override = _protocol_override(
        cell_dir,
        resolutions,
        degrade=getattr(args, "degrade", None),
        device=getattr(args, "device", None),
        split=split,
        no_flip=no_flip,
    )
    results: list[list[dict[str, Any]]] = []
    rows = evaluate_cell(
        cell_dir, resolutions, progress=not args.no_progress, cfg_override=override, results_sink=results
    )
    out = Path(args.out) if args.out else cell_dir
    # another split's (or protocol's) numbers sit beside the cell's own evaluation, never over it
    suffix = ([split] if split else []) + (["noflip"] if no_flip else [])
    write_json(out / f"{'_'.join(['evaluation', *suffix])}.json", rows)
    if suffix:  # its COCO results too, so a paired bootstrap on that split needs no retraining
        write_json(out / f"{'_'.join(['predictions', *suffix])}.json", results[0])
    run_dir = cell_dir.parent
    if resolutions:  # an explicit --res is a cross-resolution evaluation: merge its entries into the matrix
        path = run_dir / "cross_resolution.json"
        existing = read_json(path) if path.is_file() else []
        new = {(r["cell"], r["test_resolution"], r["degrade"]) for r in rows}
        keep = [r for r in existing if (r.get("cell"), r.get("test_resolution"), r.get("degrade", "clean")) not in new]
        write_json(path, keep + rows)
    for row in rows:
        print(
            f"{row['cell']}  test {row['test_resolution']}: AP {100 * row['AP']:.1f}  AP50 {100 * row['AP50']:.1f}  "
            f"AR {100 * row['AR']:.1f}  ({row['eval_split']}{'' if row['flip_test'] else ', no flip test'})"
        )
    return 0
