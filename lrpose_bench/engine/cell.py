"""One benchmark cell: (method, backbone, resolution, data, seed [, ablation]) trained and evaluated.

Writes a self-describing folder: ``config.yaml`` (resolved), ``train_log.csv``, ``checkpoint.pt``,
``predictions.json`` (COCO results), ``metrics.json``, ``displacements.npz`` and ``status.json``.
A complete cell is skipped when the run is invoked again; an interrupted one resumes.

:func:`run_cell` decides whether the cell runs (skip, resume, ``--force``) and records its state;
the cell itself reads build → pre-stage → train → evaluate → write (:func:`build_cell`,
:func:`run_pre_stage`, :func:`train_cell`, :func:`evaluate_trained`, :func:`write_cell_results`),
with one method instance throughout.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lrpose_bench.config import PIPELINES, BenchConfig, DataConfig, check_value, resolve_method_params  # noqa: F401
from lrpose_bench.data.dataset import ImageCache, PoseDataset
from lrpose_bench.data.sources import DataBundle
from lrpose_bench.engine import distributed
from lrpose_bench.engine.accelerate import precision_name
from lrpose_bench.engine.distributed import resolve_device
from lrpose_bench.engine.evaluator import Predictions, build_eval_dataset
from lrpose_bench.engine.trainer import (
    TrainResult,
    cpu_threads,
    snapshot_epochs,
    snapshot_path,
    train,
    training_stages,
)
from lrpose_bench.environment import environment
from lrpose_bench.errors import ConfigError, TrainingDiverged, UserError
from lrpose_bench.evaluation.coco_metric import build_results, evaluate_keypoints
from lrpose_bench.evaluation.floor import mean_pose, mean_pose_predictions
from lrpose_bench.method import Method, MethodContext
from lrpose_bench.registry import METHODS
from lrpose_bench.resolution import Resolution
from lrpose_bench.store import cell_lock, read_json, read_status, write_json, write_npz, write_status, write_text


@dataclass(frozen=True)
class CellSpec:
    """What distinguishes one cell of a run."""

    method: str
    backbone: str
    resolution: Resolution
    seed: int = 0
    ablation: tuple[tuple[str, Any], ...] = ()

    @property
    def cell_id(self) -> str:
        ablation = "".join(f"@{k}={v}" for k, v in self.ablation)
        return f"{self.method}{ablation}__{self.backbone}__{self.resolution}__s{self.seed}"

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.cell_id,
            "method": self.method,
            "backbone": self.backbone,
            "resolution": str(self.resolution),
            "seed": self.seed,
            "ablation": dict(self.ablation),
        }


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seeds and deterministic kernels (bitwise-reproducible on CPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def build_method(spec: CellSpec, cfg: BenchConfig, resolution: Resolution | None = None) -> Method:
    """Instantiate the cell's method with its constants for the resolution (ablations applied)."""
    method_cls = METHODS.get(spec.method)
    resolution = resolution or spec.resolution
    params = resolve_method_params(method_cls.Params, spec.method, resolution, dict(spec.ablation))
    if cfg.data.coordinates == "biased" and not method_cls.outputs_are_maps:
        raise ConfigError(
            f"data.coordinates: biased reproduces HRNet's processing of heatmap outputs; {spec.method} outputs "
            "vectors, so it runs with data.coordinates: unbiased (the default)"
        )
    return method_cls(params, MethodContext(resolution=resolution))


def build_cell_model(method: Method, spec: CellSpec, cfg: BenchConfig) -> torch.nn.Module:
    from lrpose_bench.models import build_method_model

    return build_method_model(
        spec.backbone, method, cfg.model.pretrained, cfg.model.init
    )  # + the method's head, if any


@dataclass
class CellResult:
    spec: CellSpec
    state: str  # complete | failed | skipped
    metrics: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


def score_predictions(
    bundle: DataBundle, preds: Predictions, cfg: BenchConfig
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """COCO results (rescored, OKS-NMS) and their OKS AP."""
    results = build_results(
        preds.image_ids,
        preds.keypoints,
        preds.confidences,
        preds.box_scores,
        preds.box_areas,
        cfg.eval.kpt_score_threshold,
        cfg.eval.oks_nms_threshold,
    )
    return evaluate_keypoints(bundle.val.gt, results), results


def floor_metrics(bundle: DataBundle, preds: Predictions, resolution: Resolution, cfg: BenchConfig) -> dict[str, Any]:
    """Mean-pose floor of this data set: its OKS AP/AR and its localisation error (heatmap px,
    visible joints, the units of ``decoder_errors``: a sensitive 'has it learned anything'
    reference even where AP is near 0). The mean pose is computed once and used for both."""
    from lrpose_bench.data.transforms import input_to_heatmap_scale

    pose = mean_pose(bundle.train, resolution, cfg.data.box_padding)
    keypoints, conf = mean_pose_predictions(bundle.val, pose, resolution, cfg.data.box_padding)
    instances = bundle.val.instances
    results = build_results(
        np.array([i.image_id for i in instances]),
        keypoints,
        conf,
        np.array([i.score for i in instances]),
        np.array([i.bbox[2] * i.bbox[3] for i in instances]),
        cfg.eval.kpt_score_threshold,
        cfg.eval.oks_nms_threshold,
    )
    floor: dict[str, Any] = dict(evaluate_keypoints(bundle.val.gt, results))
    vis = preds.visible > 0
    if vis.any():
        pose_hm = pose * input_to_heatmap_scale(resolution.size, resolution.heatmap)
        error = np.linalg.norm(pose_hm[None] - preds.gt_hm, axis=-1)[vis]
        floor.update(final_mean_px=float(error.mean()), final_median_px=float(np.median(error)))
    return floor


def model_complexity(model: torch.nn.Module, resolution: Resolution) -> dict[str, Any]:
    from lrpose_bench.models.complexity import count_parameters, measure_macs

    info: dict[str, Any] = {"params": count_parameters(model)}
    try:
        info["gmacs"] = measure_macs(model, resolution) / 1e9
    except Exception as error:  # complexity is informative; never fail a cell for it
        info["gmacs"] = None
        info["gmacs_error"] = str(error)
    return info


def run_cell(
    spec: CellSpec,
    cfg: BenchConfig,
    bundle: DataBundle,
    out_dir: Path,
    *,
    progress: bool = True,
    image_cache: ImageCache | None = None,
    force: bool = False,
) -> CellResult:
    """Train (or resume) and evaluate one cell; never raises for a diverged cell (marks it failed).

    A finished cell is skipped and an interrupted one resumes, but only while its method constants
    are the ones this run resolves (a changed ``configs/methods/*.yaml`` would otherwise be silently
    ignored): else :class:`ConfigError`, before anything is touched. ``force`` discards the cell's
    training state and retrains it from the start."""
    cell_dir = Path(out_dir) / spec.cell_id
    status = read_status(cell_dir)
    if not force:
        check_same_method_params(spec, cfg, cell_dir)
    if status.get("state") == "complete" and not force:
        finished = read_finished_metrics(cell_dir)
        if finished is not None:
            if distributed.is_writer():  # a rerun says what it did not redo, not only the table's state
                print(f"   {spec.cell_id}: already complete in {out_dir}, skipped (--force retrains it)", flush=True)
            return CellResult(spec, "skipped", finished)
    if not distributed.is_writer():  # DDP ranks > 0 train and evaluate their share; rank 0 locks and writes
        if force:
            distributed.barrier()  # rank 0 discards the old training state first
        return _run_cell_locked(spec, cfg, bundle, cell_dir, False, image_cache)
    with cell_lock(cell_dir):
        if force:
            discard_training_state(cell_dir)
            distributed.barrier()
        write_status(cell_dir, "running")
        try:
            result = _run_cell_locked(spec, cfg, bundle, cell_dir, progress, image_cache)
        except TrainingDiverged as error:
            _try_status(cell_dir, "failed", str(error))
            return CellResult(spec, "failed", reason=str(error))
        except KeyboardInterrupt:  # Ctrl-C: the next run resumes from the last checkpoint
            _try_status(
                cell_dir, "interrupted", "stopped by Ctrl-C; rerun the same command to resume from the last checkpoint"
            )
            raise
        except BaseException as error:
            _try_status(
                cell_dir, "failed", str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
            )
            raise
        write_status(cell_dir, "complete")
        return result


def read_finished_metrics(cell_dir: Path) -> dict[str, Any] | None:
    """The ``metrics.json`` of a cell whose status says complete, or ``None`` when it or the cell's
    ``predictions.json`` is missing or unreadable: then the cell is treated as incomplete
    (re-evaluated from its complete checkpoint, or retrained without one) and one line says so,
    instead of every rerun crashing on the file, or skipping a cell whose predictions the report's
    bootstrap and keypoint-error tables cannot read."""
    info, problem = _read_json_of(cell_dir / "metrics.json", dict, "it holds no 'metrics' object")
    if problem is None and not isinstance(info.get("metrics"), dict):
        problem = "its metrics.json is corrupt (it holds no 'metrics' object)"
    if problem is None:
        _, problem = _read_json_of(cell_dir / "predictions.json", list, "it holds no list of COCO results")
    if problem is None:
        return info
    what = (
        "re-evaluating it from its checkpoint"
        if (cell_dir / "checkpoint.pt").is_file()
        else "training it again (no checkpoint either)"
    )
    if distributed.is_writer():
        print(f"   cell {cell_dir.name} is marked complete but {problem}; {what}", flush=True)
    return None


def _read_json_of(path: Path, kind: type, wrong_kind: str) -> tuple[Any, str | None]:
    """(the JSON in ``path``, ``None``) when it is of type ``kind``, else (``None``, what is wrong, as
    "its NAME is missing" or "its NAME is corrupt (why)")."""
    try:
        value = read_json(path)
        if not isinstance(value, kind):
            raise ValueError(wrong_kind)
        return value, None
    except FileNotFoundError:
        return None, f"its {path.name} is missing"
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"its {path.name} is corrupt ({first[:100]})"


def _normalised(params: Any) -> Any:
    """Method constants as ``config.yaml`` holds them (a YAML round trip: tuples become lists)."""
    return yaml.safe_load(yaml.safe_dump(params, sort_keys=True))


def check_same_method_params(spec: CellSpec, cfg: BenchConfig, cell_dir: Path) -> None:
    """Refuse to skip or resume a cell whose saved method constants differ from this run's."""
    saved_path = cell_dir / "config.yaml"
    if not saved_path.is_file():
        return
    try:
        saved = (yaml.safe_load(saved_path.read_text()) or {}).get("method_params")
    except (OSError, yaml.YAMLError):
        return  # unreadable: the cell is rewritten anyway when it runs
    if saved is None:
        return
    current = _normalised(build_method(spec, cfg).describe_params())
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    if changed:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:4])
        raise ConfigError(
            f"cell {spec.cell_id} in {cell_dir.parent} was trained with other method constants "
            f"({shown}); use another --out, or --force to retrain it with the current ones"
        )


def discard_training_state(cell_dir: Path) -> None:
    """``--force``: forget the cell's checkpoint, training log and results, so it retrains from the start
    (a complete checkpoint would otherwise be loaded and only re-evaluated)."""
    for name in ("checkpoint.pt", "train_log.csv", "metrics.json", "predictions.json", "displacements.npz"):
        (cell_dir / name).unlink(missing_ok=True)
    for stale in cell_dir.glob(SNAPSHOT_PREDICTIONS_GLOB):
        stale.unlink(missing_ok=True)


def _try_status(cell_dir: Path, state: str, reason: str) -> None:
    """Mark the cell; on a full disk this may fail too, and must not hide the original error."""
    try:
        write_status(cell_dir, state, reason=reason)
    except (OSError, UserError):
        pass


@dataclass
class BuiltCell:
    """What :func:`build_cell` makes: the ONE method instance that runs the pre-stage, trains and
    is evaluated (so what the pre-stage prepares is what evaluation uses), its network, the device
    and the image cache the cell's data sets share."""

    method: Method
    train_res: Resolution  # the network's input size, for training and evaluation (SPSR+pose: 256x192)
    model: torch.nn.Module
    device: torch.device
    ctx: distributed.DistContext
    cache: ImageCache


def build_cell(
    spec: CellSpec, cfg: BenchConfig, bundle: DataBundle, cell_dir: Path, image_cache: ImageCache | None
) -> BuiltCell:
    """Seed, then build the cell's method, network and device; rank 0 writes ``config.yaml``."""
    seed_everything(spec.seed, cfg.train.deterministic)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    method = build_method(spec, cfg)
    train_res = method.train_resolution()
    model = build_cell_model(method, spec, cfg)
    ctx = distributed.context()
    device = resolve_device(cfg.train.device, ctx)
    cache = image_cache or ImageCache(cfg.data.image_cache_mb)
    if ctx.is_writer:
        write_resolved_config(cell_dir, spec, cfg, bundle, method)
    return BuiltCell(method, train_res, model, device, ctx, cache)


def write_resolved_config(cell_dir: Path, spec: CellSpec, cfg: BenchConfig, bundle: DataBundle, method: Method) -> None:
    """``config.yaml``: the resolved configuration and method constants the cell runs with (a rerun
    compares them before it skips or resumes the cell; ``evaluate --checkpoint`` rebuilds from it)."""
    resolved = {
        "cell": spec.describe(),
        "config": cfg.to_dict(),
        "method_params": method.describe_params(),
        "dataset": bundle.name,
    }
    write_text(cell_dir / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))


def run_pre_stage(
    method: Method,
    *,
    bundle: DataBundle,
    cfg: BenchConfig,
    cell_dir: Path,
    device: torch.device,
    progress: bool,
    image_cache: ImageCache,
) -> None:
    """The method's pre-stage (:meth:`~lrpose_bench.method.Method.prepare`), once per cell before
    pose training, on the same instance that then trains and is evaluated: SPSR+pose trains (or
    reuses, from ``run_dir/_sr/``) its SR network here, which its ``eval_input_transform`` applies.
    A no-op for every other built-in method."""
    method.prepare(
        bundle=bundle,
        cfg=cfg,
        run_dir=cell_dir.parent,
        cell_dir=cell_dir,
        device=device,
        progress=progress,
        image_cache=image_cache,
    )


def checkpoint_meta(spec: CellSpec, method: Method) -> dict[str, Any]:
    """The identity a training checkpoint carries: resuming refuses another cell's checkpoint."""
    return {
        "method": spec.method,
        "backbone": spec.backbone,
        "resolution": str(spec.resolution),
        "ablation": dict(spec.ablation),
        "head_channels": method.head_channels(),
    }


@dataclass
class TrainedCell:
    """Outcome of :func:`train_cell`."""

    result: TrainResult
    seconds: float  # wall time of training, the fast pipeline's shutdown included
    input_pipeline: str  # "crop_store" (fast path) or "reference"


def train_cell(
    built: BuiltCell, spec: CellSpec, cfg: BenchConfig, bundle: DataBundle, cell_dir: Path, progress: bool
) -> TrainedCell:
    """Train (or resume, or find finished) the cell's network on the training split, through the
    crop store when :func:`use_crop_store` picks it."""
    train_set = PoseDataset(
        bundle.train,
        built.method,
        built.train_res,
        train=True,
        augment=cfg.augment,
        box_padding=cfg.data.box_padding,
        seed=spec.seed,
        image_cache=built.cache,
        source_transform=_source_transform(cfg, train=True, seed=spec.seed),
        coordinates=cfg.data.coordinates,
    )
    pipeline = fast_pipeline(
        cfg,
        bundle,
        built.method,
        built.train_res,
        built.device,
        seed=spec.seed,
        progress=progress,
        image_cache=built.cache,
    )
    t0 = time.perf_counter()
    result = train(
        built.model,
        built.method,
        train_set,
        cfg.train,
        cell_dir=cell_dir,
        meta=checkpoint_meta(spec, built.method),
        seed=spec.seed,
        device=built.device,
        progress=progress,
        pipeline=pipeline,
    )
    if pipeline is not None:
        pipeline.close()
    # evaluate in the default layout whatever trained (train.channels_last): a network rebuilt from
    # checkpoint.pt (`evaluate --checkpoint`) runs NCHW, and NHWC kernels sum in another order, which
    # can flip an arg-max between two near-equal heatmap pixels of a barely trained model
    built.model.to(memory_format=torch.contiguous_format)
    return TrainedCell(result, time.perf_counter() - t0, "crop_store" if pipeline is not None else "reference")


@dataclass
class CellEvaluation:
    """Outcome of :func:`evaluate_trained` (rank 0)."""

    preds: Predictions
    metrics: dict[str, float]  # OKS AP/AR
    results: list[dict[str, Any]]  # COCO results (predictions.json)
    floor: dict[str, Any]  # the mean-pose floor
    seconds: float  # prediction + scoring
    instances: int  # evaluation instances
    #: scores of the weights kept at fractions of train.epochs (the budget curve), see :func:`score_snapshots`
    snapshots: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def evaluate_trained(built: BuiltCell, cfg: BenchConfig, bundle: DataBundle, progress: bool) -> CellEvaluation | None:
    """Predict the evaluation split (each DDP rank its share), score it and the mean-pose floor;
    ``None`` on ranks > 0, whose share went to rank 0."""
    eval_set = build_eval_dataset(bundle.val, built.method, built.train_res, cfg, built.cache)
    t1 = time.perf_counter()
    preds = distributed.predict_sharded(
        built.model,
        built.method,
        eval_set,
        built.ctx,
        batch_size=cfg.eval.batch_size,
        flip_test=cfg.eval.flip_test,
        device=built.device,
        progress=progress,
        num_workers=cfg.train.num_workers,
        input_transform=built.method.eval_input_transform(),
    )
    if preds is None:
        return None
    metrics, results = score_predictions(bundle, preds, cfg)
    seconds = time.perf_counter() - t1
    floor = floor_metrics(bundle, preds, built.train_res, cfg)
    return CellEvaluation(preds, metrics, results, floor, seconds, len(eval_set))


def score_snapshots(
    built: BuiltCell, cfg: BenchConfig, bundle: DataBundle, cell_dir: Path, progress: bool, total_epochs: int
) -> list[dict[str, Any]]:
    """Score the weights kept during training (``train.snapshot_fractions``) on the evaluation split
    with the same protocol as the final weights: the budget curve, and every method's score at the
    base budget (CAL's stage 1). The final weights are put back afterwards. Ranks > 0 take part in
    each prediction; only rank 0 gets the list.

    Each snapshot's COCO results are kept beside its weights (:func:`snapshot_predictions_name`), so
    the report can break its errors down as it does the final predictions' (left/right confusion
    and the AP with inversions fixed against budget), reading the run folder only."""
    final = {k: v.detach().clone() for k, v in built.model.state_dict().items()}
    scored: list[dict[str, Any]] = []
    for epochs, fraction in sorted(snapshot_epochs(cfg.train).items()):
        path = snapshot_path(cell_dir, epochs)
        if epochs >= total_epochs or not path.is_file():
            continue
        built.model.load_state_dict(torch.load(path, map_location=built.device, weights_only=True))
        evaluation = evaluate_trained(built, cfg, bundle, progress)
        if evaluation is not None:
            errors = decoder_errors(evaluation.preds)
            predictions = snapshot_predictions_name(epochs)
            write_json(cell_dir / predictions, evaluation.results)
            scored.append(
                {
                    "fraction": fraction,
                    "epochs": epochs,
                    "metrics": evaluation.metrics,
                    "errors": errors,
                    "predictions": predictions,
                }
            )
    built.model.load_state_dict(final)
    return scored


#: every snapshot's COCO results in a cell folder (:func:`snapshot_predictions_name`)
SNAPSHOT_PREDICTIONS_GLOB = "predictions_epoch*.json"


def snapshot_predictions_name(epochs: int) -> str:
    """File name, in the cell folder, of the COCO results of the weights kept after ``epochs``."""
    return f"predictions_epoch{epochs:04d}.json"


def write_cell_results(
    cell_dir: Path,
    spec: CellSpec,
    cfg: BenchConfig,
    bundle: DataBundle,
    built: BuiltCell,
    trained: TrainedCell,
    evaluation: CellEvaluation,
) -> dict[str, Any]:
    """``predictions.json``, ``displacements.npz`` and ``metrics.json`` (returned): the files the
    report reads, so a cell folder describes itself."""
    write_json(cell_dir / "predictions.json", evaluation.results)
    heatmap_size = np.array(built.train_res.heatmap)
    write_npz(cell_dir / "displacements.npz", **evaluation.preds.displacement_arrays(), heatmap_size=heatmap_size)
    info = cell_record(spec, cfg, bundle, built, trained, evaluation)
    write_json(cell_dir / "metrics.json", info)
    return info


def cell_record(
    spec: CellSpec,
    cfg: BenchConfig,
    bundle: DataBundle,
    built: BuiltCell,
    trained: TrainedCell,
    evaluation: CellEvaluation,
) -> dict[str, Any]:
    """The content of ``metrics.json``: what was run, its scores, the network and the timing."""
    method = built.method
    return {
        "cell": {
            **spec.describe(),
            "dataset": bundle.name,
            "eval_split": bundle.eval_label,
            "profile": cfg.profile,
            "degrade": cfg.degrade,
        },
        "protocol": _protocol(cfg),
        "metrics": evaluation.metrics,
        "floor": evaluation.floor,
        "errors": decoder_errors(evaluation.preds),
        "model": {
            **model_complexity(built.model.cpu(), built.train_res),
            "head_channels": method.head_channels(),
            "train_resolution": str(built.train_res),
        },
        "method": {
            "codec": method.codec_name,
            "loss": method.loss_name,
            "description": method.description,
            "params": method.describe_params(),
            "stages": [dataclasses.asdict(s) for s in training_stages(method, cfg.train)],
        },
        "snapshots": evaluation.snapshots,
        "timing": _timing_record(cfg, built.ctx, trained, evaluation),
        "gt_annotations": str(bundle.val.annotation_file),
        "num_instances": evaluation.instances,
        "environment": environment(),
    }


@dataclass
class TrainingTime:
    """The cost of a cell's whole training (``metrics.json`` ``timing``)."""

    seconds: float
    images_per_second: float
    source: str  # where the seconds come from
    cpu_seconds: float | None  # seconds × the CPU threads they ran on; None when a part's threads are unknown


def whole_training_time(trained: TrainedCell, threads_now: int) -> TrainingTime:
    """Seconds, images/s and CPU-seconds of the cell's whole training; ``threads_now``: the CPU
    threads this process trains on, all processes together (``trainer.cpu_threads``).

    Why: ``train_s`` is the cost axis of the budget table (CPU-minutes per cell). A cell trained in
    one go is timed by the wall clock of this process. A cell that resumed, or whose finished
    checkpoint is only re-evaluated (its ``metrics.json`` lost), trained partly or wholly in earlier
    processes; this process's wall clock would say ~0 s. Those epochs' seconds come from the epoch
    log the checkpoint carries (``train_log.csv`` rows, the steps of each epoch; ~1.5 % under the
    wall clock, which also counts checkpoint writes), the seconds a mid-epoch checkpoint saved of the
    epoch it cut, plus this process's wall clock for what it trained. CPU-seconds price each part at
    the threads it ran on (each log row records them), not at this process's, which may differ."""
    result = trained.result
    if result.resumed_from is None:
        return TrainingTime(trained.seconds, result.images_per_second, "wall clock", trained.seconds * threads_now)
    rows = [row for row in result.history if isinstance(row, dict)]
    earlier = [row for row in rows if int(row.get("epoch", 0)) <= result.resumed_from]
    parts = [(float(row.get("seconds", 0.0)), _int_or_zero(row.get("cpu_threads"))) for row in earlier]
    if result.carried_seconds > 0:
        parts.append((result.carried_seconds, result.carried_cpu_threads))
    if result.iterations:
        parts.append((trained.seconds, threads_now))
        source = f"epoch log to epoch {result.resumed_from}, then wall clock"
    else:
        source = "epoch log (training finished in an earlier process)"
    seconds = sum(part for part, _ in parts)
    known = all(threads > 0 for part, threads in parts if part > 0)
    cpu_seconds = sum(part * threads for part, threads in parts) if known else None
    images = sum(int(row.get("iterations", 0)) for row in rows) * (result.global_batch or 0)
    return TrainingTime(seconds, images / seconds if seconds > 0 else 0.0, source, cpu_seconds)


def _int_or_zero(value: Any) -> int:
    """A log cell as an int; 0 for a missing or empty one (logs written before the column existed)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _timing_record(
    cfg: BenchConfig, ctx: distributed.DistContext, trained: TrainedCell, evaluation: CellEvaluation
) -> dict[str, Any]:
    """``metrics.json`` ``timing``: speeds, the resume point, and how the batches were made."""
    training = whole_training_time(trained, cpu_threads(ctx.world_size))
    return {
        "train_s": round(training.seconds, 2),
        "train_s_source": training.source,
        "train_cpu_s": None if training.cpu_seconds is None else round(training.cpu_seconds, 2),
        "eval_s": round(evaluation.seconds, 2),
        "train_images_per_s": round(training.images_per_second, 1),
        "eval_images_per_s": round(evaluation.instances / max(evaluation.seconds, 1e-9), 1),
        "resumed_from_epoch": trained.result.resumed_from,
        "world_size": ctx.world_size,
        "global_batch": trained.result.global_batch or cfg.train.batch_size * ctx.world_size,
        "input_pipeline": trained.input_pipeline,
        "precision": precision_name(resolve_device(cfg.train.device), cfg.train.amp),
        "channels_last": cfg.train.channels_last,
    }


def _run_cell_locked(
    spec: CellSpec, cfg: BenchConfig, bundle: DataBundle, cell_dir: Path, progress: bool, image_cache: ImageCache | None
) -> CellResult:
    """One cell, in order: build → pre-stage → train → evaluate → write (rank 0 holds the cell lock)."""
    built = build_cell(spec, cfg, bundle, cell_dir, image_cache)
    run_pre_stage(
        built.method,
        bundle=bundle,
        cfg=cfg,
        cell_dir=cell_dir,
        device=built.device,
        progress=progress,
        image_cache=built.cache,
    )
    trained = train_cell(built, spec, cfg, bundle, cell_dir, progress)
    snapshots = score_snapshots(built, cfg, bundle, cell_dir, progress, trained.result.epochs)
    evaluation = evaluate_trained(built, cfg, bundle, progress)
    if evaluation is None:  # rank > 0: its share went to rank 0, which scores and writes
        return CellResult(spec, "complete", {})
    evaluation.snapshots = snapshots
    return CellResult(spec, "complete", write_cell_results(cell_dir, spec, cfg, bundle, built, trained, evaluation))


def use_crop_store(cfg: BenchConfig, device: torch.device) -> bool:
    """Whether training reads the crop store (``data.pipeline``): ``auto`` picks it on every device
    with ``degrade: clean`` and unbiased coordinates. On the CPU too: ``lrpose-bench bench`` (2-core
    EPYC, hrnet-w8, 64×48, batch 128) measured the reference path feeding the step at 0.60× of the
    model step's rate and the crop store at 0.93× (its batches come 10× faster: one ``grid_sample``
    per batch instead of a cv2 warp and a numpy encode per instance). Its pixels differ from the
    reference path's only by the store's resampling (:mod:`lrpose_bench.data.gpu_augment`)."""
    choice = cfg.data.pipeline
    # the schema's rule, checked when the config loaded; again here for a config changed in code
    check_value(DataConfig, "pipeline", choice, "config key data.pipeline")
    if choice == "reference":
        return False
    if cfg.data.coordinates == "biased":  # the store and the device augmentation are UDP-unbiased
        if choice == "crop_store":
            raise ConfigError(
                "data.pipeline: crop_store runs in the unbiased coordinate system; data.coordinates: biased "
                "needs data.pipeline=reference or auto"
            )
        return False
    if cfg.degrade != "clean":
        if choice == "crop_store":
            raise ConfigError(
                f"data.pipeline: crop_store needs degrade: clean (the {cfg.degrade!r} protocol draws a "
                "new degradation of each source image every epoch, which a decode-once store cannot "
                "hold); use data.pipeline=reference or auto"
            )
        return False
    return True


def fast_pipeline(
    cfg: BenchConfig,
    bundle: DataBundle,
    method: Method,
    resolution: Resolution,
    device: torch.device,
    *,
    seed: int,
    progress: bool = False,
    image_cache: ImageCache | None = None,
) -> Any:
    """The fast input path for this cell (crop store + device augmentation), or ``None``.

    The store is built once per (training split, resolution, augmentation range) under
    ``data.crop_store.root`` and reused by every later cell and run (:func:`_open_crop_store`).
    """
    if not use_crop_store(cfg, device) or not _crop_store_fits(cfg, bundle, resolution):
        return None
    from lrpose_bench.data.gpu_augment import DeviceAugmentPipeline

    store = _open_crop_store(cfg, bundle, resolution, progress=progress, image_cache=image_cache)
    return DeviceAugmentPipeline(
        store, method, resolution, cfg.augment, seed=seed, device=device, box_padding=cfg.data.box_padding
    )


def _crop_store_fits(cfg: BenchConfig, bundle: DataBundle, resolution: Resolution) -> bool:
    """Whether the store stays within ``data.crop_store.max_gb``. Past it ``auto`` falls back to the
    reference path (a high resolution, where decoding is not the bottleneck); an explicit
    ``crop_store`` is a :class:`ConfigError` that says what to change."""
    from lrpose_bench.data.crop_store import store_geometry

    settings = cfg.data.crop_store
    height, width = store_geometry([resolution], cfg.augment, settings.oversample, settings.margin_px).size
    size_gb = len(bundle.train.instances) * height * width * 3 / 2**30
    if size_gb <= settings.max_gb:
        return True
    if cfg.data.pipeline == "auto":
        return False
    raise ConfigError(
        f"data.pipeline: the crop store for {resolution} would take {size_gb:.1f} GB "
        f"({len(bundle.train.instances)} crops of {height}x{width}), more than "
        f"data.crop_store.max_gb = {settings.max_gb:g}; raise it, lower "
        "data.crop_store.oversample, or use data.pipeline=reference"
    )


def _open_crop_store(
    cfg: BenchConfig, bundle: DataBundle, resolution: Resolution, *, progress: bool, image_cache: ImageCache | None
) -> Any:
    """Build the crop store if it is not there yet, and open it. Under DDP rank 0 builds it while
    the others wait at a barrier, then every rank opens it (a rank on another node without a shared
    cache folder builds its own copy: the build is atomic, so concurrent builders cannot collide)."""
    from lrpose_bench.data.crop_store import build_crop_store

    settings = cfg.data.crop_store
    root = Path(settings.root).expanduser() if settings.root else Path(cfg.data.cache_dir).expanduser() / "crop_store"
    read = image_cache.read if image_cache is not None else None

    def open_store() -> Any:
        return build_crop_store(
            bundle.train,
            [resolution],
            cfg.augment,
            cfg.data.box_padding,
            root,
            config=settings,
            read_image=read,
            progress=progress,
        )

    if distributed.is_writer():
        store = open_store()
        distributed.barrier()
    else:
        distributed.barrier()
        store = open_store()
    return store


def decoder_errors(preds: Predictions) -> dict[str, float]:
    """Mean/median Euclidean error (heatmap px, visible joints) of the coarse arg-max and of the
    final decoded prediction: what each decoder removes (paper Fig. 5, Eq. 11)."""
    vis = preds.visible > 0
    if not vis.any():
        return {}
    coarse = np.linalg.norm(preds.coarse_hm - preds.gt_hm, axis=-1)[vis]
    final = np.linalg.norm(preds.final_hm - preds.gt_hm, axis=-1)[vis]
    return {
        "coarse_mean_px": float(coarse.mean()),
        "coarse_median_px": float(np.median(coarse)),
        "final_mean_px": float(final.mean()),
        "final_median_px": float(np.median(final)),
    }


def _source_transform(cfg: BenchConfig, train: bool, seed: int | None = None):
    """See :func:`lrpose_bench.data.degrade.run_source_transform` (one implementation, shared with SR+pose)."""
    from lrpose_bench.data.degrade import run_source_transform

    return run_source_transform(cfg, train, seed)


def _protocol(cfg: BenchConfig) -> dict[str, Any]:
    from lrpose_bench.data.degrade import describe_preset

    return describe_preset(cfg.degrade)
