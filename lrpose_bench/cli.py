"""Command line: ``lrpose-bench run|train|evaluate|data|models|methods|oracle|report|regress|bench``.

Every user-fixable problem is printed as one line (``lrpose-bench: error: ...``) with exit status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lrpose_bench import __version__
from lrpose_bench.config import EVAL_SPLITS
from lrpose_bench.errors import ConfigError, UserError

EXAMPLES = {
    "run": "lrpose-bench run --methods cal,udp,dark --res 64x48 --profile quick --out runs/demo",
    "train": "lrpose-bench train --method cal --res 64x48 --profile quick --out runs/one",
    "evaluate": "lrpose-bench evaluate --checkpoint runs/demo/cal__hrnet-w16-slim__64x48__s0",
    "data": "lrpose-bench data synth --out ~/.cache/lrpose-bench",
    "models": "lrpose-bench models --res 64x48,128x96,256x192,384x288",
    "methods": "lrpose-bench methods",
}


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default="quick",
        help="configuration profile: quick (SynthPose, small HRNet (hrnet-w16-slim), 24 epochs, minutes on a CPU), "
        "standard (the quick recipe for 140 epochs, about 50 minutes for four methods x two seeds on 2 cores) "
        "or paper (the paper's 210-epoch schedule on hrnet-w32). Default: quick",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="YAML file merged over the profile, e.g. my.yaml with 'train: {epochs: 20}'",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one config key, e.g. --set train.epochs=5 (repeatable)",
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help="backbone name, e.g. hrnet-w32, hrnet-w8, "
        "simplebaseline-r50 (see 'lrpose-bench models'); default from the profile",
    )
    parser.add_argument("--data", default=None, help="data source: synth (embedded SynthPose, default) or coco")
    parser.add_argument(
        "--coco-root",
        default=None,
        metavar="DIR",
        help="COCO 2017 folder (annotations/, train2017/, val2017/) for --data coco",
    )
    parser.add_argument(
        "--person-boxes",
        default=None,
        metavar="FILE",
        help="COCO detection results file with person boxes for evaluation (default: ground-truth boxes)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed of training (default 0)")
    parser.add_argument(
        "--degrade", default=None, help="source degradation preset: clean (default), lr-mild, lr-severe"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, cuda:N, or auto (default); a device this machine lacks is refused before any work",
    )
    parser.add_argument(
        "--gpus",
        type=int,
        default=None,
        metavar="N",
        help="train on N >= 1 CUDA GPUs of this "
        "machine: re-runs the command under torchrun, one process per GPU (DistributedDataParallel; "
        "train.batch_size is per GPU; run.json records the world size and global batch). Refused "
        "without CUDA. Several machines: call torchrun yourself (see docs)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_evaluate_options(parser: argparse.ArgumentParser) -> None:
    """The options ``evaluate --checkpoint`` honours: the cell folder holds its configuration, data
    and backbone, so the training options of :func:`_add_common` would only be ignored there (the
    ``--weights`` options are added by ``engine/published_weights.py``, which refuses them for a cell)."""
    parser.add_argument(
        "--backbone",
        default=None,
        help="expected backbone of the cell; refused when the cell "
        "was trained with another one (the cell's own backbone is always used)",
    )
    parser.add_argument(
        "--degrade",
        default=None,
        help="evaluate under this source degradation preset instead of the cell's: clean, lr-mild, lr-severe",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, or auto (default: the cell's train.device)")
    parser.add_argument(
        "--split",
        default=None,
        choices=EVAL_SPLITS,
        help="score this split instead of the cell's data.eval_split; train is the fitting diagnostic "
        "(train AP near val AP: under-fitting)",
    )
    parser.add_argument(
        "--no-flip-test",
        action="store_true",
        help="predict without the flip test (eval.flip_test off): what flip-averaging adds to the cell's AP; "
        "written beside its own evaluation, never over it",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _bench_config(args: argparse.Namespace, extra: dict[str, Any] | None = None):
    """The configuration of a ``bench`` run; ``extra`` dotted overrides win over ``--set`` (a recipe)."""
    from lrpose_bench.config import load_config, parse_override

    overrides: dict[str, Any] = {}
    for text in args.overrides:
        key, value = parse_override(text)
        overrides[key] = value
    if args.backbone:
        overrides["model.backbone"] = args.backbone
    if args.data:
        overrides["data.source"] = args.data
    if args.coco_root:
        overrides["data.coco_root"] = args.coco_root
    if args.person_boxes:
        overrides["data.person_boxes"] = args.person_boxes
        overrides["eval.use_gt_boxes"] = False
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.degrade:
        from lrpose_bench.data.degrade import get_preset

        get_preset(args.degrade)
        overrides["degrade"] = args.degrade
    if args.device:
        overrides["train.device"] = args.device
    overrides.update(extra or {})
    return load_config(args.profile, args.config, overrides)


def _parse_ablation(items: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    from lrpose_bench.config import parse_override

    pairs = []
    for text in items:
        for part in text.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ConfigError(
                    f"--ablation {part.strip()!r} must look like KEY=VALUE, for example --ablation offset_mask=binary "
                    "(each method's constants: 'lrpose-bench methods')"
                )
            pairs.append(parse_override(part.strip()))
    return tuple(sorted(pairs))


def _method_names(text: str) -> list[str]:
    from lrpose_bench.registry import METHODS

    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))  # a repeat is one cell, as for --res
    if not names:
        raise ConfigError("no method given: pass for example --methods hrnet,udp,cal")
    for name in names:
        METHODS.get(name)
    return names


def _check_backbone(name: str) -> None:
    from lrpose_bench.registry import BACKBONES

    BACKBONES.get(name)


def _check_runnable(cfg: Any) -> None:
    """What the schema cannot know, asked of this machine before any work: that ``train.device``
    exists here and that ``model.pretrained`` names a file (else a cell would fail on it after the
    data were loaded, and every cell the same way)."""
    from lrpose_bench.engine.distributed import resolve_device

    resolve_device(cfg.train.device)
    pretrained = cfg.model.pretrained
    if pretrained and not Path(pretrained).expanduser().is_file():
        raise ConfigError(
            f"config key model.pretrained: checkpoint {Path(pretrained).expanduser()} not found; "
            "pass an existing file with --set model.pretrained=FILE, or leave it null"
        )


def _parse_seeds(seeds: str | None, default: int) -> list[int]:
    """``--seeds 0,1,2`` as a list without repeats (a repeated seed is the same cell); each seed is
    checked against the schema's range of ``seed``."""
    from lrpose_bench.config import BenchConfig, check_value

    if not seeds:
        return [default]
    try:
        values = list(dict.fromkeys(int(s) for s in seeds.split(",") if s.strip()))
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r} must be comma-separated integers, e.g. 0,1,2") from None
    if not values:
        raise ConfigError(f"--seeds {seeds!r} names no seed; pass for example --seeds 0,1,2")
    for value in values:
        check_value(BenchConfig, "seed", value, f"--seeds {seeds}")
    return values


# ------------------------------------------------------------------------------------- run
def cmd_run(args: argparse.Namespace) -> int:
    from lrpose_bench.resolution import parse_resolution_list

    cfg = _bench_config(args)
    methods = _method_names(args.methods)
    resolutions = parse_resolution_list(args.res)
    _check_runnable(cfg)
    _init_distributed(cfg)
    _check_backbone(cfg.model.backbone)
    return _run_cells(
        cfg,
        methods,
        resolutions,
        [_parse_ablation(args.ablation)],
        Path(args.out),
        not args.no_progress,
        report=not args.no_report,
        seeds=args.seeds,
        force=args.force,
    )


def _run_cells(
    cfg,
    methods,
    resolutions,
    ablations: list[tuple],
    out: Path,
    progress: bool,
    report: bool = True,
    seeds: str | None = None,
    force: bool = False,
) -> int:
    """Every (method, resolution, ablation, seed) cell into ``out``, all in one pool of parallel
    cells (the sweep passes all grid points of a method at once, so two cells at a time never wait
    for the last seed of one point); a run that fails before writing anything removes the folders
    it created (the body is :func:`_run_cells_in`)."""
    from lrpose_bench.store import ensure_writable_folder, first_missing_folder, remove_empty_folders

    seed_list = _parse_seeds(seeds, cfg.seed)
    created = first_missing_folder(out)
    out = ensure_writable_folder(out)
    try:
        return _run_cells_in(cfg, methods, resolutions, ablations, out, progress, report, seed_list, force)
    except BaseException:
        if created is not None:  # a run that failed before writing anything leaves no empty folders
            remove_empty_folders(created)
        raise


def _run_cells_in(
    cfg, methods, resolutions, ablations, out: Path, progress: bool, report: bool, seed_list: list[int], force: bool
) -> int:
    import pandas as pd

    from lrpose_bench.data.dataset import ImageCache
    from lrpose_bench.data.sources import load_data
    from lrpose_bench.engine import distributed
    from lrpose_bench.engine.cell import CellSpec, build_method, run_cell
    from lrpose_bench.engine.parallel import cell_jobs, run_cells_parallel, threads_per_cell
    from lrpose_bench.environment import environment
    from lrpose_bench.report.tables import percent
    from lrpose_bench.store import now, write_json

    specs = []
    for method in methods:
        for res in resolutions:
            for ablation in ablations:
                for seed in seed_list:
                    specs.append(CellSpec(method, cfg.model.backbone, res, seed, ablation))
    for spec in specs:  # validate every ablation key before any training starts
        build_method(spec, cfg)
    ctx = distributed.context()
    writer = ctx.is_writer
    if writer:
        _check_same_configuration(out, cfg, force)
    bundle = load_data(cfg.data, progress=progress)
    processes = _processes(cfg, ctx.world_size)
    if writer:
        previous = _previous_run(out)
        cells = list(dict.fromkeys([*(str(c) for c in previous.get("cells") or []), *(s.cell_id for s in specs)]))
        record = {
            "started": previous.get("started") or now(),
            "updated": now(),
            "config": cfg.to_dict(),
            "cells": cells,
            "dataset": bundle.name,
            "eval_split": bundle.eval_label,
            "environment": environment(),
            "argv": sys.argv[1:],
        }
        if processes:
            record["processes"] = processes
        write_json(out / "run.json", record)
    cache = ImageCache(cfg.data.image_cache_mb)
    jobs = cell_jobs(cfg, len(specs), ctx.world_size)
    if jobs > 1:
        print(f"training {jobs} cells at a time, {threads_per_cell(cfg, jobs)} thread(s) each", flush=True)
        finished = dict(run_cells_parallel(specs, cfg, out, jobs, force))
    rows = []
    floor = None
    failures = 0
    for spec in specs:
        if jobs > 1:
            result = finished[spec]
        else:
            print(f"== cell {spec.cell_id}", flush=True)
            result = run_cell(spec, cfg, bundle, out, progress=progress, image_cache=cache, force=force)
        if not writer:  # DDP ranks > 0: rank 0 scores, prints and writes
            continue
        if result.state == "failed":
            failures += 1
            print(f"   cell {spec.cell_id} FAILED: {result.reason}", flush=True)
            rows.append({"cell": spec.cell_id, "state": "failed"})
            continue
        metrics = result.metrics["metrics"]
        floor = result.metrics.get("floor", floor)
        rows.append(
            {
                "cell": spec.cell_id,
                "state": result.state,
                **{k: round(percent(metrics.get(k)), 1) for k in ("AP", "AP50", "AP75", "APM", "APL", "AR")},
            }
        )
    table = pd.DataFrame(rows)
    print()
    print(f"Results on {bundle.eval_label} (OKS AP ×100; {cfg.profile} profile, backbone {cfg.model.backbone}):")
    print(table.to_string(index=False))
    if processes:
        print(
            f"trained on {processes['world_size']} processes: batch {processes['batch_per_process']} each, "
            f"global batch {processes['global_batch']}"
        )
    if floor is not None:
        print(f"mean-pose floor: AP {100 * floor['AP']:.1f}  (a predictor that ignores the image)")
    if report and writer:
        _build_run_report(out, cfg.report.formats)
    return 1 if failures else 0


def _build_run_report(out: Path, formats: list[str]) -> None:
    """The report at the end of a run. The cells are saved by then, so a report that fails must not
    end an hour of training on a traceback: one line says the cells are kept, what failed and how to
    rebuild (a :class:`UserError`; ``--debug`` shows it chained to the original traceback)."""
    try:
        from lrpose_bench.report.build import build_report
    except ImportError:
        return
    try:
        paths = build_report(out, formats=formats)
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise UserError(
            f"the cells are saved in {out}, but the report failed ({type(error).__name__}: {first}); "
            f"rebuild it with 'lrpose-bench report {out}' (--debug shows the traceback)"
        ) from error
    print(f"report: {paths.get('html', out / 'report')}")


def _processes(cfg: Any, world_size: int) -> dict[str, int] | None:
    """World size and global batch when more than one process trains (``train.batch_size`` is
    per process, so the global batch, and with it the result, depends on the world size)."""
    if world_size <= 1:
        return None
    return {
        "world_size": world_size,
        "batch_per_process": cfg.train.batch_size,
        "global_batch": cfg.train.batch_size * world_size,
    }


def _previous_run(out: Path) -> dict[str, Any]:
    """The ``run.json`` already in ``out`` (empty when there is none or it is unreadable): a second
    run on the same folder adds its cells to the list instead of replacing it."""
    from lrpose_bench.store import read_json

    try:
        previous = read_json(out / "run.json")
    except (OSError, ValueError):
        return {}
    return previous if isinstance(previous, dict) else {}


def _check_same_configuration(out: Path, cfg: Any, force: bool) -> None:
    """Refuse to mix configurations in one output folder: finished cells would be skipped silently
    and the report would put numbers from different protocols (e.g. --degrade) side by side."""
    from lrpose_bench.config import flatten
    from lrpose_bench.store import read_json

    previous_path = out / "run.json"
    if force or not previous_path.is_file():
        return
    try:
        previous = flatten(read_json(previous_path).get("config", {}))
    except (OSError, ValueError):
        return
    current = flatten(cfg.to_dict())
    # a key added to the schema after the run was made is "unchanged" while it holds its default
    defaults = flatten(type(cfg)().to_dict())
    ignored = (
        "train.device",
        "train.num_workers",
        "train.threads",
        "train.parallel_cells",
        "train.sync_every",
        "eval.batch_size",
        "report.",
        "data.crop_store.workers",
        "data.crop_store.root",
    )
    changed = sorted(
        k
        for k in set(previous) | set(current)
        if previous.get(k) != current.get(k)
        and not k.startswith(ignored)
        and not (k not in previous and current.get(k) == defaults.get(k))
    )
    if changed:
        shown = ", ".join(f"{k}: {previous.get(k)!r} -> {current.get(k)!r}" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ConfigError(
            f"output folder {out} holds a run with another configuration ({shown}{more}); "
            "use another --out, or --force to recompute its cells with this configuration"
        )


def _init_distributed(cfg) -> None:
    """Join torchrun's process group (no-op in a single process); ranks > 0 stay quiet."""
    from lrpose_bench.engine.distributed import init_from_env

    if not init_from_env(cfg.train.device).is_writer:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - rank 0 prints tables and progress


def cmd_train(args: argparse.Namespace) -> int:
    from lrpose_bench.resolution import parse_resolution_list

    cfg = _bench_config(args)
    _check_backbone(cfg.model.backbone)
    _check_runnable(cfg)
    _init_distributed(cfg)
    return _run_cells(
        cfg,
        _method_names(args.method),
        parse_resolution_list(args.res),
        [_parse_ablation(args.ablation)],
        Path(args.out),
        not args.no_progress,
        report=False,
        force=args.force,
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lrpose_bench.engine.evaluate_cli import evaluate_checkpoint

    return evaluate_checkpoint(args)


def cmd_data(args: argparse.Namespace) -> int:
    from lrpose_bench.config import load_config
    from lrpose_bench.synthpose import ensure_synthpose

    cfg = load_config(args.profile, args.config)
    out = Path(args.out).expanduser() if args.out else Path(cfg.data.cache_dir).expanduser()
    paths = ensure_synthpose(out, cfg.data.synth, progress=not args.no_progress)
    print(f"SynthPose ready: {paths.root}")
    print(f"  train: {paths.train_annotations}")
    print(f"  val:   {paths.val_annotations}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from lrpose_bench.models.complexity import models_table
    from lrpose_bench.registry import BACKBONES
    from lrpose_bench.resolution import parse_resolution_list

    names = [n.strip() for n in args.backbones.split(",")] if args.backbones else None
    for name in names or []:
        BACKBONES.get(name)
    table = models_table(parse_resolution_list(args.res), names, out_channels=args.out_channels)
    print(table.to_string(index=False))
    print(
        "GMACs: multiply-adds (a multiply-add counts once; torch.utils.flop_counter's FLOPs / 2) in units "
        "of 2^30, with transposed convolutions counted per output pixel: the convention of the official "
        "HRNet repository's get_model_summary, whose 'GFLOPs' the papers print (configs/models.yaml: complexity)."
    )
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from lrpose_bench.method_catalog import describe_methods

    print(describe_methods())
    return 0


# ----------------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with the suite's error format: one line naming the option and pointing at
    ``--help`` (argparse's default prints the whole usage block first), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lrpose-bench",
        description="Benchmark suite for low-resolution human pose estimation (CAL, UDP, DARK, HRNet, "
        "SimpleBaseline, SPSR+pose).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  " + "\n  ".join(EXAMPLES.values()),
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"lrpose-bench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=f"example:\n  {EXAMPLES.get(name, '')}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "train and evaluate every (method, resolution) cell, print a table, write a report")
    p.add_argument(
        "--methods", required=True, help="comma-separated methods, e.g. hrnet,dark,udp,cal (see 'lrpose-bench methods')"
    )
    p.add_argument("--res", default="64x48", help="comma-separated input sizes HxW, e.g. 64x48,128x96 (default 64x48)")
    p.add_argument(
        "--out",
        default="runs/latest",
        help="output folder, one sub-folder per cell (default runs/latest); "
        "re-running on the same folder skips finished cells and resumes interrupted ones",
    )
    p.add_argument(
        "--ablation",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method constant override, e.g. --ablation offset_mask=binary (CAL ablations)",
    )
    p.add_argument("--seeds", default=None, help="comma-separated seeds for several runs per cell, e.g. 0,1,2")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument(
        "--force",
        action="store_true",
        help="retrain every cell from the start (default: skip finished "
        "cells and resume interrupted ones from their last checkpoint)",
    )
    _add_common(p)

    p = add("train", cmd_train, "train and evaluate one cell (a run with one method)")
    p.add_argument("--method", required=True, help="method name, e.g. cal")
    p.add_argument("--res", default="64x48", help="input size HxW (default 64x48)")
    p.add_argument("--out", default="runs/latest", help="output folder (default runs/latest)")
    p.add_argument("--ablation", action="append", default=[], metavar="KEY=VALUE", help="method constant override")
    p.add_argument("--force", action="store_true", help="retrain the cell from the start even if it is finished")
    _add_common(p)

    p = add("evaluate", cmd_evaluate, "evaluate a trained cell folder (or checkpoint), optionally at other resolutions")
    p.add_argument("--checkpoint", default=None, help="cell folder or its checkpoint.pt (or --weights FILE)")
    p.add_argument("--res", default=None, help="evaluation input sizes (default: the training size)")
    p.add_argument("--out", default=None, help="where to write the evaluation (default: inside the cell folder)")
    _add_evaluate_options(p)
    from lrpose_bench.engine.published_weights import add_arguments as _published_weights_arguments

    _published_weights_arguments(p)  # --weights FILE --format hrnet-official|mmpose

    p = add("data", cmd_data, "generate the embedded SynthPose data set into its cache folder")
    p.add_argument("what", choices=["synth"], help="which data set (synth)")
    p.add_argument("--out", default=None, help="cache folder (default from config: ~/.cache/lrpose-bench)")
    p.add_argument("--profile", default="quick", help="configuration profile (default quick)")
    p.add_argument("--config", default=None, help="YAML file with data.synth settings")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = add("models", cmd_models, "list backbones with parameters and GMACs at each resolution")
    p.add_argument("--res", default="64x48,128x96,256x192,384x288", help="resolutions HxW")
    p.add_argument("--backbones", default=None, help="comma-separated subset (default: all)")
    p.add_argument("--out-channels", type=int, default=17, help="head channels: 17 (heatmaps) or 51 (UDP/CAL)")

    add("methods", cmd_methods, "list every method with its codec, loss, stages and constants")
    for extra in ("oracle", "report", "regress", "bench", "docs", "sweep"):
        _register_optional(sub, extra, add)
    return parser


def _register_optional(sub: Any, name: str, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Sub-commands that live in their own modules (``lrpose_bench.commands.<name>``)."""
    import importlib

    try:
        module = importlib.import_module(f"lrpose_bench.commands.{name}")
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith("lrpose_bench.commands"):
            return
        raise
    parser = add(name, module.run, module.HELP)
    module.add_arguments(parser)
    if name not in ("regress", "report", "docs"):
        if not any(a.dest == "profile" for a in parser._actions):
            _add_common(parser)


def _check_gpus(gpus: int, device: str | None) -> None:
    """``--gpus N`` starts one process per CUDA GPU: refuse what cannot run (N < 1, no CUDA, fewer
    GPUs than N, ``--device cpu``) instead of silently training N CPU processes with N times the
    global batch. Several CPU processes remain possible by calling torchrun directly."""
    import torch

    if gpus < 1:
        raise ConfigError(f"--gpus {gpus}: expected a number of GPUs >= 1; drop --gpus to train in one process")
    if gpus == 1:
        return
    if device == "cpu":
        raise ConfigError(
            f"--gpus {gpus} with --device cpu: --gpus starts one process per CUDA GPU; drop --gpus to train on the CPU"
        )
    if not torch.cuda.is_available():
        raise ConfigError(
            f"--gpus {gpus}: no CUDA GPU is usable on this machine; drop --gpus to train on the CPU in one process"
        )
    if torch.cuda.device_count() < gpus:
        raise ConfigError(
            f"--gpus {gpus} but only {torch.cuda.device_count()} GPU(s) are visible; "
            f"pass --gpus {torch.cuda.device_count()} or fewer"
        )


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """Warnings as one line, without the Python source line (``--debug`` keeps Python's format)."""
    return f"lrpose-bench: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # name the sub-command whose --help lists what it takes (evaluate takes no training options)
        prog = f"lrpose-bench {args.command}" if getattr(args, "command", None) else "lrpose-bench"
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extra)}; see '{prog} --help'\n")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    formatwarning = warnings.formatwarning
    if not debug:
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
        warnings.formatwarning = _one_line_warning
    try:
        gpus = getattr(args, "gpus", None)
        if gpus is not None:
            from lrpose_bench.engine.distributed import relaunch_with_torchrun, under_torchrun

            if not under_torchrun():
                _check_gpus(gpus, getattr(args, "device", None))
            code = relaunch_with_torchrun(gpus, list(sys.argv[1:] if argv is None else argv))
            if code >= 0:  # -1: already under torchrun (or one GPU), go on in this process
                return code
        return int(args.func(args) or 0)
    except UserError as error:
        if debug:
            raise
        print(f"lrpose-bench: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("lrpose-bench: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
