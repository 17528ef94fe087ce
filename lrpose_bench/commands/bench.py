"""``lrpose-bench bench``: where the time of a training step goes, per (resolution, method).

One run measures, on the same device and thread count, and prints as images/s and ratios:

* ``model``: the training step (forward, method loss, backward, Adam: the trainer's
  :class:`~lrpose_bench.engine.accelerate.TrainStep`, CUDA-graphed with ``--cuda-graphs``) on one
  fixed batch already on the device: the ceiling any input pipeline can reach;
* ``step_cpu`` / ``step_fast``: the same step fed by the real pipelines: the CPU reference path
  (``PoseDataset``: decode-once image cache, cv2 warp, numpy encode, collate) and the fast path
  (crop store + batched ``grid_sample`` + torch targets on the training device from an epoch plan,
  :mod:`lrpose_bench.data.gpu_augment`);
* ``data_cpu`` / ``data_fast``: the two input pipelines alone (batches ready on the device);
  ``plan``: the fast path's host-side epoch planning (random draws and matrices), which training
  runs a whole epoch ahead in a background thread;
* ``mgm_share``: CAL's stage-2 mask (Algorithm 1: arg-max displacements, GMM-EM, mask) as a share of
  the ``model`` step (methods with a stage-2 MGM only);
* ``eval``: evaluation images/s (crop, flip test, decode, back-projection);
* the recipe table (``--no-recipes`` skips it): whole training steps under each training recipe
  of ``configs/bench.yaml`` (the quick profile's CPU path before it was tuned, and the
  configuration as it stands), each with its own batch size and input pipeline, and their ratio
  (:mod:`lrpose_bench.commands.bench_recipes`).

``--coco-val-estimate`` adds the time pycocotools needs to score a COCO-val-sized result set
(6,352 person instances over 5,000 images, predictions = perturbed ground truth, rescoring + OKS-NMS
+ ``COCOeval``) and, with the measured eval throughput, an estimate of a full COCO val evaluation.

Times are medians over ``--steps`` timed repetitions after warm-up, with ``torch.cuda.synchronize``
around each on CUDA. The training split is cut to the instances the steps use (the crop store
build time is reported separately, it is paid once per data set). ``--out FILE.json`` writes every
number with the environment for the report.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lrpose_bench.errors import ConfigError

HELP = "measure training/data/evaluation throughput per resolution and method (model, CPU path, fast path)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--res", default="64x48,128x96", help="comma-separated input sizes HxW (default 64x48,128x96)")
    parser.add_argument("--methods", default="hrnet,udp,cal", help="comma-separated methods (default hrnet,udp,cal)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument(
        "--steps",
        type=int,
        default=3,
        help="timed repetitions per measurement, after one warm-up (default 3; use 20+ on a GPU)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: shared CPUs give stable ratios; 0 = PyTorch's default)",
    )
    parser.add_argument(
        "--eval-instances",
        type=int,
        default=64,
        help="validation instances for the evaluation measurement (default 64)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="capture the training step in a CUDA graph (train.cuda_graphs; CUDA only)",
    )
    parser.add_argument(
        "--coco-val-estimate",
        action="store_true",
        help="also time pycocotools on a COCO-val-sized result set and estimate a full COCO val evaluation",
    )
    parser.add_argument(
        "--no-recipes",
        action="store_true",
        help="skip the recipe table (whole training steps under each recipe of configs/bench.yaml, side by side)",
    )
    parser.add_argument("--out", default=None, metavar="FILE", help="write the numbers as JSON, e.g. RUN/bench.json")
    parser.epilog = (
        "example:\n  lrpose-bench bench --res 64x48,128x96 --backbone hrnet-w32 --methods hrnet,udp,cal "
        "--device cuda --steps 20 --batch-size 256 --cuda-graphs --coco-val-estimate --out runs/bench.json"
    )


# ------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], steps: int, device: torch.device, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``steps`` runs after ``warmup`` runs (device-synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(max(1, steps)):
        start = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


# -------------------------------------------------------------------------- one cell
def bench_cell(
    method_name: str,
    res: Any,
    cfg: Any,
    bundle: Any,
    store: Any,
    device: torch.device,
    batch_size: int,
    steps: int,
    eval_instances: int,
) -> dict[str, Any]:
    """Every measurement of one (resolution, method); images/s and ratios."""
    from torch.utils.data import DataLoader, default_collate

    from lrpose_bench.commands.bench_recipes import bench_train_set
    from lrpose_bench.data.dataset import ImageCache
    from lrpose_bench.data.gpu_augment import DeviceAugmentPipeline
    from lrpose_bench.engine.accelerate import TrainStep, adam_for, configure_backends
    from lrpose_bench.engine.cell import CellSpec, build_cell_model, build_method
    from lrpose_bench.engine.evaluator import build_eval_dataset, predict

    spec = CellSpec(method_name, cfg.model.backbone, res, cfg.seed)
    method = build_method(spec, cfg)
    if method.train_resolution() != res:
        raise ConfigError(
            f"bench: method {method_name!r} trains at {method.train_resolution()}, not {res}; "
            "leave it out of --methods (its pose network is benchmarked at that resolution)"
        )
    torch.manual_seed(cfg.seed)
    model = build_cell_model(method, spec, cfg).to(device)
    use_cuda = device.type == "cuda"
    configure_backends(device, deterministic=False)
    channels_last = cfg.train.channels_last
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp = cfg.train.amp
    graphed = use_cuda and cfg.train.cuda_graphs
    optimizer = adam_for(
        model, cfg.train.lr, cfg.train.weight_decay, device, graphed=graphed, fused=cfg.train.fused_adam
    )
    stage = method.stages(1)[0]
    n = batch_size

    def loss_fn(outputs: torch.Tensor, batch: Any) -> Any:
        return method.loss(outputs, batch, stage)

    step = TrainStep(model, optimizer, loss_fn, device=device, amp=amp, channels_last=channels_last, graphed=graphed)

    # model only: one fixed batch on the device (synthetic images, targets encoded from real joints)
    cache = ImageCache(cfg.data.image_cache_mb)
    train_set = bench_train_set(bundle, method, res, cfg, cache)
    fixed = _to_device(default_collate([train_set[i % len(train_set)] for i in range(n)]), device)
    synthetic = torch.randn(n, 3, res.height, res.width, device=device)
    fixed_batch = {**fixed, "image": synthetic}
    model.train()
    t_model = median_seconds(lambda: step.step(fixed_batch), steps, device, warmup=2)

    # data pipelines alone
    order = list(range(len(train_set)))
    loader_iter = {"it": None}

    def cpu_batch() -> dict[str, Any]:
        if loader_iter["it"] is None:
            loader_iter["it"] = iter(
                DataLoader(
                    train_set,
                    batch_size=n,
                    shuffle=False,
                    drop_last=True,
                    num_workers=cfg.train.num_workers,
                    pin_memory=use_cuda,
                )
            )
        try:
            batch = next(loader_iter["it"])
        except StopIteration:
            loader_iter["it"] = None
            return cpu_batch()
        return _to_device(batch, device)

    fast = DeviceAugmentPipeline(store, method, res, cfg.augment, seed=cfg.seed, device=device)
    usable = len(order) - len(order) % n
    plan_box = {"plan": None}

    def make_plan() -> None:
        plan_box["plan"] = fast.plan(order[:usable])

    t_plan = median_seconds(make_plan, max(1, steps // 2), device, warmup=0)
    position = {"i": 0}

    def fast_batch() -> dict[str, Any]:
        start = position["i"] if position["i"] + n <= usable else 0
        position["i"] = start + n
        return fast.batch_of(plan_box["plan"], start, start + n)

    t_data_cpu = median_seconds(cpu_batch, steps, device)
    t_data_fast = median_seconds(fast_batch, steps, device)

    # full steps: the same TrainStep fed by each pipeline
    t_step_cpu = median_seconds(lambda: step.step(cpu_batch()), steps, device)
    t_step_fast = median_seconds(lambda: step.step(fast_batch()), steps, device)

    # MGM share (methods whose later stage computes an MGM from the predicted heatmaps)
    mgm_share = None
    later = [s for s in method.stages(10) if method.uses_mgm(s)]
    if later:
        with torch.no_grad():
            heatmaps = method.heatmaps(step.forward(synthetic)).float()
        t_mgm = median_seconds(lambda: method.offset_weight(heatmaps, fixed, later[0]), steps * 4, device)
        mgm_share = t_mgm / t_model

    # evaluation (flip test as configured)
    from lrpose_bench.data.coco import KeypointSplit

    val = bundle.val
    subset = KeypointSplit(val.name, val.annotation_file, val.image_root, val.gt, val.instances[:eval_instances])
    eval_set = build_eval_dataset(subset, method, res, cfg, cache)
    model.eval()
    eval_kwargs = dict(
        batch_size=min(cfg.eval.batch_size, len(eval_set)), flip_test=cfg.eval.flip_test, device=device, progress=False
    )
    t_eval = median_seconds(lambda: predict(model, method, eval_set, **eval_kwargs), max(1, steps // 2), device)

    row: dict[str, Any] = {
        "res": str(res),
        "method": method_name,
        "model_img_s": n / t_model,
        "step_cpu_img_s": n / t_step_cpu,
        "step_fast_img_s": n / t_step_fast,
        "data_cpu_img_s": n / t_data_cpu,
        "data_fast_img_s": n / t_data_fast,
        "plan_img_s": usable / t_plan,
        "eval_img_s": len(eval_set) / t_eval,
        "mgm_share": mgm_share,
    }
    row["fast_vs_cpu_step"] = row["step_fast_img_s"] / row["step_cpu_img_s"]
    row["step_cpu_vs_model"] = row["step_cpu_img_s"] / row["model_img_s"]
    row["step_fast_vs_model"] = row["step_fast_img_s"] / row["model_img_s"]
    row["fast_vs_cpu_data"] = row["data_fast_img_s"] / row["data_cpu_img_s"]
    return row


#: COCO val2017 person instances with keypoints the reference evaluation scores, and its images
COCO_VAL_INSTANCES = 6352
COCO_VAL_IMAGES = 5000


def synthetic_coco_val(
    seed: int = 0, instances: int = COCO_VAL_INSTANCES, images: int = COCO_VAL_IMAGES
) -> tuple[dict[str, Any], Any]:
    """A ground-truth document shaped like COCO val (person boxes, 17 keypoints, areas) and the
    arrays ``build_results`` takes, with predictions = ground truth + 2-px noise: what the scoring
    half of an evaluation costs does not depend on the pixels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    image_ids = np.sort(rng.integers(1, images + 1, instances))
    boxes = np.column_stack(
        [
            rng.uniform(0, 400, instances),
            rng.uniform(0, 300, instances),
            rng.uniform(20, 240, instances),
            rng.uniform(40, 320, instances),
        ]
    )
    joints = boxes[:, None, :2] + rng.uniform(0, 1, (instances, 17, 2)) * boxes[:, None, 2:]
    visible = rng.random((instances, 17)) > 0.3
    visible[:, 0] = True
    gt: dict[str, Any] = {
        "images": [{"id": i, "width": 640, "height": 480} for i in range(1, images + 1)],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [],
    }
    for i in range(instances):
        kps = np.column_stack([joints[i], np.where(visible[i], 2, 0)]).ravel()
        kps[np.repeat(~visible[i], 3)] = 0
        gt["annotations"].append(
            {
                "id": i + 1,
                "image_id": int(image_ids[i]),
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [float(v) for v in boxes[i]],
                "area": float(boxes[i, 2] * boxes[i, 3]),
                "num_keypoints": int(visible[i].sum()),
                "keypoints": [float(v) for v in kps],
            }
        )
    predicted = joints + rng.normal(0, 2.0, joints.shape)
    confidences = rng.uniform(0.1, 1.0, (instances, 17))
    arrays = (image_ids, predicted, confidences, np.ones(instances), boxes[:, 2] * boxes[:, 3])
    return gt, arrays


def coco_val_estimate(rows: list[dict[str, Any]], cfg: Any, seed: int = 0) -> dict[str, Any]:
    """Seconds of a full COCO val evaluation: pycocotools scoring measured on a COCO-val-sized
    synthetic result set, plus the network part at the slowest eval rate measured in ``rows``."""
    from lrpose_bench.evaluation.coco_metric import build_results, evaluate_keypoints

    gt, arrays = synthetic_coco_val(seed)
    start = time.perf_counter()
    results = build_results(*arrays, cfg.eval.kpt_score_threshold, cfg.eval.oks_nms_threshold)
    metrics = evaluate_keypoints(gt, results)
    scoring = time.perf_counter() - start
    eval_rate = min(r["eval_img_s"] for r in rows)
    network = COCO_VAL_INSTANCES / eval_rate
    return {
        "instances": COCO_VAL_INSTANCES,
        "images": COCO_VAL_IMAGES,
        "scoring_s": scoring,
        "eval_img_s": eval_rate,
        "network_s": network,
        "total_s": scoring + network,
        "sanity_ap": metrics.get("AP"),
        "flip_test": cfg.eval.flip_test,
        "note": "SynthPose-scaled estimate: network time from the measured eval rate (SynthPose crops, "
        "flip test as configured); COCO JPEG decoding of ~5,000 images not included",
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    table = pd.DataFrame(rows)
    if "mgm_share" in table:
        table["mgm_share"] = table["mgm_share"].map(lambda v: "-" if v is None or v != v else f"{100 * v:.2f}%")
    for column in table.columns:
        if column.endswith("_img_s"):
            table[column] = table[column].map(lambda v: f"{v:,.0f}")
        elif "_vs_" in column:
            table[column] = table[column].map(lambda v: f"{v:.2f}x")
    return table.to_string(index=False)


# ----------------------------------------------------------------------------------- run
def run(args: argparse.Namespace) -> int:
    from lrpose_bench.cli import _bench_config, _check_backbone, _method_names
    from lrpose_bench.commands.bench_recipes import bench_recipe, compare_rows, format_recipes, load_recipes
    from lrpose_bench.data.crop_store import CropStoreConfig, build_crop_store
    from lrpose_bench.data.sources import load_data
    from lrpose_bench.engine.accelerate import precision_name
    from lrpose_bench.engine.cell import seed_everything
    from lrpose_bench.engine.distributed import resolve_device
    from lrpose_bench.environment import environment
    from lrpose_bench.resolution import parse_resolution_list
    from lrpose_bench.store import write_json

    if args.batch_size < 1 or args.steps < 1 or args.eval_instances < 1:
        raise ConfigError("bench: --batch-size, --steps and --eval-instances must be >= 1")
    cfg = _bench_config(args)
    if args.cuda_graphs:
        cfg.train.cuda_graphs = True
    _check_backbone(cfg.model.backbone)
    methods = _method_names(args.methods)
    resolutions = parse_resolution_list(args.res)
    device = resolve_device(cfg.train.device)
    previous_threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    seed_everything(cfg.seed, deterministic=False)
    recipes = {} if args.no_recipes else load_recipes()
    recipe_cfgs = {name: _bench_config(args, overrides) for name, overrides in recipes.items()}
    largest = max([args.batch_size, *(c.train.batch_size for c in recipe_cfgs.values())])
    # warm-up + timed steps, CPU and fast step measurements
    needed = max(args.batch_size * (args.steps + 1) * 2, largest * (args.steps + 2))
    cfg.data.max_train_instances = min(cfg.data.max_train_instances or needed, needed)
    cfg.data.max_val_instances = min(cfg.data.max_val_instances or args.eval_instances, args.eval_instances)
    started = time.perf_counter()
    try:
        bundle = load_data(cfg.data, progress=not args.no_progress)
        if len(bundle.train.instances) < args.batch_size:
            raise ConfigError(
                f"bench: the training split has {len(bundle.train.instances)} instances, "
                f"fewer than --batch-size {args.batch_size}"
            )
        store_root = Path(cfg.data.cache_dir).expanduser() / "crop_store"
        rows: list[dict[str, Any]] = []
        measured: dict[str, list[dict[str, Any]]] = {}
        stores: dict[str, dict[str, Any]] = {}
        by_aspect: dict[float, list[Any]] = {}
        for res in resolutions:
            by_aspect.setdefault(round(res.width / res.height, 9), []).append(res)
        for group in by_aspect.values():
            t0 = time.perf_counter()
            store = build_crop_store(
                bundle.train,
                group,
                cfg.augment,
                cfg.data.box_padding,
                store_root,
                config=CropStoreConfig(workers=max(1, args.threads)),
            )
            seconds = time.perf_counter() - t0
            stores[",".join(map(str, group))] = {
                "path": str(store.path),
                "crop_size": list(store.size),
                "instances": len(store),
                "megabytes": store.nbytes / 2**20,
                "open_or_build_seconds": seconds,
                "built_now": hasattr(store, "build_seconds"),
                "build_img_s": len(store) / seconds if hasattr(store, "build_seconds") else None,
            }
            for res in group:
                for name in methods:
                    print(f"bench: {res} {name} ...", flush=True)
                    rows.append(
                        bench_cell(
                            name, res, cfg, bundle, store, device, args.batch_size, args.steps, args.eval_instances
                        )
                    )
                    for recipe, recipe_cfg in recipe_cfgs.items():
                        print(f"bench: {res} {name} recipe {recipe} ...", flush=True)
                        measured.setdefault(recipe, []).append(
                            bench_recipe(name, res, recipe_cfg, bundle, store, device, args.steps, median_seconds)
                        )
        coco = coco_val_estimate(rows, cfg, seed=cfg.seed) if args.coco_val_estimate else None
    finally:
        torch.set_num_threads(previous_threads)
    elapsed = time.perf_counter() - started
    threads = args.threads if args.threads > 0 else previous_threads
    print()
    print(
        f"Throughput in images/s on {device} ({threads} CPU thread(s)), backbone {cfg.model.backbone}, "
        f"batch {args.batch_size}, median of {args.steps} step(s):"
    )
    print(format_table(rows))
    print(
        "model: train step (fwd, loss, bwd, Adam) on one fixed device batch; step_cpu/step_fast: the same step fed "
        "by the CPU reference / crop-store + device pipeline; data_*: pipeline only; plan: host-side epoch planning "
        "(runs an epoch ahead in a thread); mgm_share: CAL stage-2 MGM / model step."
    )
    recipe_rows = compare_rows(measured) if measured else []
    if recipe_rows:
        print()
        print(
            f"Training recipes side by side (whole steps: each recipe's input pipeline and batch, then fwd, loss, "
            f"bwd, Adam; configs/bench.yaml), images/s, {threads} CPU thread(s), median of {args.steps} step(s):"
        )
        print(format_recipes(recipe_rows))
    for key, info in stores.items():
        built = f"built at {info['build_img_s']:.0f} instances/s" if info["built_now"] else "reused"
        print(
            f"crop store {key}: {info['instances']} crops of {info['crop_size'][0]}x{info['crop_size'][1]} "
            f"({info['megabytes']:.1f} MB), {built}"
        )
    if coco is not None:
        print(
            f"COCO val estimate ({coco['instances']} instances, {coco['images']} images): pycocotools scoring "
            f"{coco['scoring_s']:.1f} s (rescoring + OKS-NMS + COCOeval, measured); network evaluation at the "
            f"slowest measured eval rate {coco['eval_img_s']:,.0f} img/s: {coco['network_s']:.1f} s; total "
            f"~{coco['total_s']:.1f} s (SynthPose-scaled estimate: COCO JPEG decoding not included)"
        )
    print(f"bench took {elapsed:.1f} s")
    if args.out:
        out = Path(args.out)
        write_json(
            out,
            {
                "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "threads": threads,
                "backbone": cfg.model.backbone,
                "batch_size": args.batch_size,
                "steps": args.steps,
                "precision": precision_name(device, cfg.train.amp),
                "channels_last": cfg.train.channels_last,
                "rows": rows,
                "crop_stores": stores,
                "coco_val_estimate": coco,
                "recipes": {"definitions": recipes, "measured": measured, "rows": recipe_rows},
                "seconds": elapsed,
                "environment": environment(),
            },
        )
        print(f"wrote {out}")
    return 0
