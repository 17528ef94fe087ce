"""``lrpose-bench evaluate --weights FILE --format hrnet-official|mmpose``: a published checkpoint
evaluated at several input sizes, with an AP-vs-resolution curve.

Key layouts read (``torch.load(..., weights_only=True)``; nothing is downloaded):

* ``hrnet-official``: leoxiaobin/deep-high-resolution-net.pytorch ``lib/models/pose_hrnet.py`` files
  such as ``pose_hrnet_w32_256x192.pth``: a plain state dict with keys ``conv1.weight``,
  ``layer1.0.…``, ``transition1.…``, ``stage2.…``–``stage4.…``, ``final_layer.weight``. Our HRNet
  (:mod:`lrpose_bench.models.hrnet`) uses exactly these module names, so the keys load unchanged
  (a DataParallel ``module.`` prefix is removed);
* ``mmpose``: an mmpose checkpoint ``{"meta": …, "state_dict": …}`` whose keys carry the
  ``backbone.`` prefix (mmpose's HRNet has the official module names) and ``head.final_layer.`` for
  the 1x1 heatmap layer (``keypoint_head.final_layer.`` in mmpose 0.x). ``meta`` is ignored.

Loading is strict: every tensor of the model must be in the file with its shape and nothing else may
be; otherwise one line names the first missing and the first unexpected key
(:class:`~lrpose_bench.errors.CheckpointError`). Reading the file reuses the rules of
:mod:`lrpose_bench.models.pretrained` (``weights_only``, readable errors for truncated files).

Protocol at a test size other than the weights' training size (``--weights-res``, default 256x192):
``resample`` (default) is the cross-resolution protocol of ``evaluate --checkpoint`` (the crop is
taken at the training size, reduced to the test size and brought back, so the network sees only what
a test-size crop carries); ``native`` feeds the test-size crop to the (fully convolutional) network
directly, with the method's constants of that size. Output: ``published_evaluation.json`` / ``.csv``
and ``ap_vs_resolution.png`` in ``--out`` (default ``runs/published/<file stem>``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("hrnet-official", "mmpose")
PROTOCOLS = ("resample", "native")
DEFAULT_RES = "64x48,128x96,256x192"

#: mmpose head prefixes → our names (1.x HeatmapHead; 0.x TopdownHeatmapSimpleHead)
MMPOSE_HEAD_PREFIXES: tuple[tuple[str, str], ...] = (
    ("head.final_layer.", "final_layer."),
    ("keypoint_head.final_layer.", "final_layer."),
)


#: options that only the ``--weights`` path reads: (dest, flag, default)
WEIGHTS_ONLY_OPTIONS: tuple[tuple[str, str, Any], ...] = (
    ("weights_format", "--format", None),
    ("method", "--method", None),
    ("weights_res", "--weights-res", None),
    ("protocol", "--protocol", None),
    ("profile", "--profile", None),
    ("config", "--config", None),
    ("overrides", "--set", None),
    ("data", "--data", None),
    ("coco_root", "--coco-root", None),
    ("person_boxes", "--person-boxes", None),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``evaluate`` for published checkpoints. ``--backbone``, ``--device``, ``--degrade``,
    ``--res``, ``--out`` and ``--no-progress`` are ``evaluate``'s own; the options below apply to
    ``--weights`` only (the ``--checkpoint`` path refuses them: a cell folder holds its configuration)."""
    group = parser.add_argument_group("published checkpoints (--weights)")
    _add_model_options(group)
    _add_config_options(group)


def _add_model_options(group: argparse._ArgumentGroup) -> None:
    """The file, its key layout, the codec that decodes it, its training size and the test protocol."""
    group.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="a published checkpoint to evaluate instead of a trained cell, e.g. "
        "pose_hrnet_w32_256x192.pth (with --format, --method, --backbone)",
    )
    group.add_argument(
        "--format",
        default=None,
        choices=FORMATS,
        dest="weights_format",
        help="key layout of --weights: hrnet-official (leoxiaobin/deep-high-resolution-net) or "
        "mmpose (state_dict with backbone./head. prefixes)",
    )
    group.add_argument(
        "--method",
        default=None,
        help="codec that decodes the published heatmaps "
        "(default hrnet: Gaussian heatmaps, arg-max + quarter pixel; dark also fits)",
    )
    group.add_argument(
        "--weights-res",
        default=None,
        metavar="HxW",
        help="input size the published model was trained at (default 256x192)",
    )
    group.add_argument(
        "--protocol",
        default=None,
        choices=PROTOCOLS,
        help="test sizes other than --weights-res: resample (crop at the training size, reduce "
        "to the test size and back; default) or native (feed the test-size crop)",
    )


def _add_config_options(group: argparse._ArgumentGroup) -> None:
    """The configuration of the evaluation (the ``run`` command's options of the same names)."""
    group.add_argument(
        "--profile", default=None, help="configuration profile for the data and evaluation settings (default quick)"
    )
    group.add_argument("--config", default=None, metavar="FILE", help="YAML file merged over the profile")
    group.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one config key, e.g. --set eval.batch_size=32 (repeatable)",
    )
    group.add_argument("--data", default=None, help="data source: synth (default) or coco")
    group.add_argument("--coco-root", default=None, metavar="DIR", help="COCO 2017 folder for --data coco")
    group.add_argument(
        "--person-boxes",
        default=None,
        metavar="FILE",
        help="COCO detection results with person boxes (default: ground-truth boxes)",
    )


def refuse_weights_only_options(args: argparse.Namespace) -> None:
    """``evaluate --checkpoint`` with an option that only ``--weights`` reads: one line, not ignored."""
    from lrpose_bench.errors import ConfigError

    given = [flag for dest, flag, default in WEIGHTS_ONLY_OPTIONS if getattr(args, dest, default) not in (default, [])]
    if given:
        raise ConfigError(
            f"{', '.join(given)}: only with --weights FILE (a published checkpoint); a --checkpoint "
            "cell is evaluated with its own configuration"
        )


def _bench_config_for(args: argparse.Namespace) -> Any:
    """The configuration of a ``--weights`` evaluation (profile + --config + --set + data options)."""
    from lrpose_bench.cli import _bench_config

    full = argparse.Namespace(
        profile=args.profile or "quick",
        config=args.config,
        overrides=list(args.overrides or []),
        backbone=getattr(args, "backbone", None),
        data=args.data,
        coco_root=args.coco_root,
        person_boxes=args.person_boxes,
        seed=None,
        degrade=getattr(args, "degrade", None),
        device=getattr(args, "device", None),
    )
    return _bench_config(full)


# ------------------------------------------------------------------------------------ loading
def _load_file(path: Path) -> Any:
    import torch

    from lrpose_bench.errors import CheckpointError

    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found: pass an existing checkpoint to --weights")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure here is a file we cannot use
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        if "weights_only" in text or "Unsupported global" in text:
            raise CheckpointError(
                f"weights file {path} holds objects that torch.load(weights_only=True) refuses "
                f"({first[:160]}); save only the state dict (and plain 'meta' values)"
            ) from None
        raise CheckpointError(
            f"weights file {path} cannot be read (truncated or not a PyTorch file): {first[:200]}"
        ) from None


def _strip(prefix: str, key: str) -> str:
    return key[len(prefix) :] if key.startswith(prefix) else key


def published_state_dict(obj: Any, fmt: str, path: Path | str) -> dict[str, Any]:
    """The file's tensors under this project's key names, for layout ``fmt``."""
    import torch

    from lrpose_bench.errors import CheckpointError, ConfigError

    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}; got {fmt!r}")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"weights file {path} holds {type(obj).__name__}, not a state dict")
    if fmt == "mmpose":
        if not isinstance(obj.get("state_dict"), Mapping):
            shown = ", ".join(list(map(str, obj))[:3])
            raise CheckpointError(
                f"weights file {path} is not an mmpose checkpoint: no 'state_dict' entry "
                f"(top-level keys: {shown}); is it --format hrnet-official?"
            )
        raw = obj["state_dict"]
    else:
        raw = obj["state_dict"] if isinstance(obj.get("state_dict"), Mapping) else obj
    state: dict[str, Any] = {}
    for key, value in raw.items():
        key = _strip("module.", str(key))
        if fmt == "mmpose":
            for old, new in MMPOSE_HEAD_PREFIXES:
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            else:
                key = _strip("backbone.", key) if key.startswith("backbone.") else key
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"weights file {path}: entry {key!r} is {type(value).__name__}, not a tensor")
        state[key] = value
    return state


def load_published(model: Any, path: Path | str, fmt: str) -> dict[str, Any]:
    """Load ``path`` (layout ``fmt``) into ``model`` strictly; returns a small summary."""
    import torch

    from lrpose_bench.errors import CheckpointError

    path = Path(path).expanduser()
    state = published_state_dict(_load_file(path), fmt, path)
    target = model.state_dict()
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"first missing key {missing[0]!r} ({len(missing)} missing)")
        if unexpected:
            parts.append(f"first unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected)")
        raise CheckpointError(
            f"weights file {path} does not have the {fmt} key layout of this model: "
            f"{'; '.join(parts)}; check --format, --backbone and --method"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(target[key].shape):
            raise CheckpointError(
                f"weights file {path}: {key!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(target[key].shape)}; is it for another backbone width or joint count?"
            )
    with torch.no_grad():
        for key, value in state.items():
            target[key].copy_(value.to(dtype=target[key].dtype))
    return {"file": str(path), "format": fmt, "tensors": len(state)}


# --------------------------------------------------------------------------------- evaluation
@dataclass
class PublishedRequest:
    """A checked ``evaluate --weights`` request: what to load, how to decode it, where to test it."""

    fmt: str  # key layout of the file (FORMATS)
    cfg: Any  # BenchConfig of the data and evaluation settings
    method_name: str  # the codec that decodes the published heatmaps
    backbone: str
    protocol: str  # PROTOCOLS: how a test size other than the weights' is fed
    weights_res: Any  # Resolution the weights were trained at
    resolutions: list[Any]  # test resolutions


def _published_request(args: argparse.Namespace) -> PublishedRequest:
    """Check the ``--weights`` options (one line for each mistake) and resolve the configuration."""
    from lrpose_bench.cli import _check_backbone, _method_names
    from lrpose_bench.errors import ConfigError
    from lrpose_bench.resolution import Resolution, parse_resolution_list

    fmt = getattr(args, "weights_format", None)
    if fmt is None:
        raise ConfigError(f"--weights needs --format: one of {', '.join(FORMATS)}")
    if getattr(args, "checkpoint", None):
        raise ConfigError("pass either --checkpoint (a trained cell) or --weights (a published model), not both")
    cfg = _bench_config_for(args)
    names = _method_names(args.method or "hrnet")
    if len(names) != 1:
        raise ConfigError(f"--method {args.method!r}: name one method (the codec of the published heads)")
    protocol = args.protocol or "resample"
    backbone = cfg.model.backbone
    _check_backbone(backbone)
    weights_res = Resolution.parse(args.weights_res or "256x192")
    resolutions = parse_resolution_list(args.res or DEFAULT_RES)
    return PublishedRequest(fmt, cfg, names[0], backbone, protocol, weights_res, resolutions)


def _published_test_setup(request: PublishedRequest, method: Any, test_res: Any) -> tuple[Any, Any, Any]:
    """(method, crop resolution, batch transform) for one test size: the weights' own size and the
    ``native`` protocol crop at the test size (with that size's constants); ``resample`` crops at the
    weights' size and reduces each batch to the test size and back."""
    from lrpose_bench.engine.cell import CellSpec, build_method
    from lrpose_bench.engine.evaluate_cli import resample_transform

    if test_res == request.weights_res:
        return method, test_res, None
    if request.protocol == "native":
        return build_method(CellSpec(request.method_name, request.backbone, test_res), request.cfg), test_res, None
    return method, request.weights_res, resample_transform(test_res, request.weights_res)


def _published_row(
    request: PublishedRequest, summary: dict[str, Any], test_res: Any, eval_label: str
) -> dict[str, Any]:
    """The identifying part of one ``published_evaluation.json`` row (the metrics follow)."""
    return {
        "weights": summary["file"],
        "format": request.fmt,
        "method": request.method_name,
        "backbone": request.backbone,
        "weights_resolution": str(request.weights_res),
        "test_resolution": str(test_res),
        "protocol": request.protocol if test_res != request.weights_res else "native",
        "eval_split": eval_label,
        "flip_test": bool(request.cfg.eval.flip_test),
    }


def evaluate_published(args: argparse.Namespace) -> int:
    """CLI entry (``evaluate --weights``): evaluate a published model at each ``--res``."""
    from lrpose_bench.data.dataset import ImageCache
    from lrpose_bench.data.sources import load_data
    from lrpose_bench.engine.cell import CellSpec, build_method, score_predictions
    from lrpose_bench.engine.distributed import resolve_device
    from lrpose_bench.engine.evaluator import build_eval_dataset, predict
    from lrpose_bench.errors import ConfigError
    from lrpose_bench.models import build_method_model

    request = _published_request(args)
    cfg = request.cfg
    method = build_method(CellSpec(request.method_name, request.backbone, request.weights_res), cfg)
    if method.train_resolution() != request.weights_res:
        raise ConfigError(f"--method {request.method_name}: a pipeline method cannot decode a published pose network")
    model = build_method_model(request.backbone, method, None)
    summary = load_published(model, args.weights, request.fmt)
    device = resolve_device(cfg.train.device)
    model.to(device)
    bundle = load_data(cfg.data, progress=not args.no_progress)
    cache = ImageCache(cfg.data.image_cache_mb)
    rows = []
    for test_res in request.resolutions:
        used, crop_res, transform = _published_test_setup(request, method, test_res)
        preds = predict(
            model,
            used,
            build_eval_dataset(bundle.val, used, crop_res, cfg, cache),
            batch_size=cfg.eval.batch_size,
            flip_test=cfg.eval.flip_test,
            device=device,
            progress=not args.no_progress,
            input_transform=transform,
        )
        metrics, _ = score_predictions(bundle, preds, cfg)
        rows.append({**_published_row(request, summary, test_res, bundle.eval_label), **metrics})
    out = _write_published(args, request, rows, bundle.eval_label)
    _print_published(summary, request, rows, out)
    return 0


def _write_published(
    args: argparse.Namespace, request: PublishedRequest, rows: list[dict[str, Any]], label: str
) -> Path:
    """``published_evaluation.json`` / ``.csv`` and ``ap_vs_resolution.png`` in the output folder."""
    import pandas as pd

    from lrpose_bench.analysis import figures as figs
    from lrpose_bench.resolution import Resolution
    from lrpose_bench.store import atomic_write, ensure_writable_folder, write_json, write_text

    stem = Path(args.weights).stem
    out = ensure_writable_folder(Path(args.out) if args.out else Path("runs") / "published" / stem)
    write_json(out / "published_evaluation.json", rows)
    frame = pd.DataFrame(rows)
    write_text(out / "published_evaluation.csv", frame.to_csv(index=False))
    curve = pd.DataFrame(
        {
            "method": f"{request.method_name} ({stem})",
            "resolution": frame["test_resolution"],
            "pixels": [Resolution.parse(r).height * Resolution.parse(r).width for r in frame["test_resolution"]],
            "AP": 100 * frame["AP"].astype(float),
        }
    )
    title = f"{stem} ({request.fmt}), {label}, protocol {request.protocol}"
    figure = figs.ap_vs_resolution(curve, None, title, None)
    atomic_write(out / "ap_vs_resolution.png", lambda handle: figure.savefig(handle, format="png", dpi=130))
    return out


def _print_published(summary: dict[str, Any], request: PublishedRequest, rows: list[dict[str, Any]], out: Path) -> None:
    """What was loaded, one AP line per test size, and the files written."""
    print(
        f"{summary['file']}: loaded {summary['tensors']} tensors ({request.fmt} layout) into "
        f"{request.backbone} + {request.method_name} head"
    )
    for row in rows:
        print(
            f"  test {row['test_resolution']:>8} ({row['protocol']}): AP {100 * row['AP']:.1f}  "
            f"AP50 {100 * row['AP50']:.1f}  AR {100 * row['AR']:.1f}  ({row['eval_split']})"
        )
    print(
        f"written: {out / 'published_evaluation.json'}, {out / 'published_evaluation.csv'}, {out / 'ap_vs_resolution.png'}"
    )
