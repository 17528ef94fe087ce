"""Typed configuration: YAML files in ``configs/`` merged into dataclasses, validated with clear errors.

Layers, later wins: ``configs/defaults.yaml`` → ``configs/profiles/<profile>.yaml`` → a user YAML
(``--config FILE``) → command-line options. Method constants live in
``configs/methods/<method>.yaml`` as ``defaults`` plus ``per_resolution`` overrides, validated against
the method's ``Params`` dataclass; ablation switches (``--ablation key=value``) override them.

Validation names the offending key with its dotted path and the expected type, e.g.
``config key train.lr: expected float, got 'fast'``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from lrpose_bench.errors import ConfigError
from lrpose_bench.resolution import Resolution

CONFIG_DIR = Path(__file__).resolve().parent / "configs_data"


def config_dir() -> Path:
    """Folder holding the packaged YAML configs (the top-level ``configs/`` in a checkout)."""
    repo_configs = Path(__file__).resolve().parent.parent / "configs"
    if (repo_configs / "defaults.yaml").is_file():
        return repo_configs
    return CONFIG_DIR


# ------------------------------------------------------------------------------ value rules
@dataclass(frozen=True)
class Range:
    """The values a numeric key may take (for a list: each element).

    A rule sits beside its field in the schema (:func:`bounded`), so one place says what a key
    accepts: :func:`load_config` checks every rule once, before any work starts (a
    ``train.batch_size`` of 0 must not surface as a ZeroDivisionError, nor ``eval.batch_size`` 0
    after the whole training budget is spent), and the configuration reference prints it. Floats
    must also be finite: YAML's ``.nan`` fails every comparison and would slip through.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value (instead of low <= value)
    high_open: bool = False  # value < high
    what: str | None = None  # how the message names one value, e.g. "a probability"
    increasing: bool = False  # lists only: elements strictly increasing
    why: str | None = None  # appended to the message: what the bound protects

    def describe(self) -> str:
        """The range in symbols: ``>= 1``, ``> 0``, ``in [0, 1]``, ``in [0, 1)``."""
        low, high = _num(self.low), _num(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "finite"

    def allows(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (already type-checked), or ``None`` when it is allowed."""
        many = isinstance(value, (list, tuple))
        for item in value if many else [value]:
            if item is None or isinstance(item, bool) or not isinstance(item, (int, float)):
                continue  # None of an optional key; types are _coerce's job
            if not self.allows(item):
                what = self.what or ("an int" if isinstance(item, int) else "a number")
                return f"expected {'every element to be ' if many else ''}{what} {self.describe()}, got {value!r}"
        if self.increasing and many and any(b <= a for a, b in zip(value[:-1], value[1:], strict=True)):
            return f"expected strictly increasing values, got {value!r}"
        return None


@dataclass(frozen=True)
class Choice:
    """The names a string key may take (for a list: each element); ``pattern`` (a regular
    expression for the whole value, shown as ``pattern_text``) adds a family such as ``cuda:N``."""

    values: tuple[str, ...]
    pattern: str | None = None
    pattern_text: str | None = None
    why: str | None = None

    def describe(self) -> str:
        return "one of " + ", ".join([*self.values, *([self.pattern_text or self.pattern] if self.pattern else [])])

    def problem(self, value: Any) -> str | None:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if (
                isinstance(item, str)
                and item not in self.values
                and not (self.pattern and re.fullmatch(self.pattern, item))
            ):
                return f"expected {self.describe()}, got {item!r}"
        return None


@dataclass(frozen=True)
class OddSize:
    """An odd window size in pixels (blur kernels, score windows); ``allow_off``: 0 and 1 also
    mean "no window" (a blur kernel of 0/1 does not blur)."""

    allow_off: bool = False
    why: str | None = None

    def describe(self) -> str:
        return "0/1 (off) or an odd size like 3, 7, 15" if self.allow_off else "a positive odd size like 1, 3, 5"

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return None  # types are _coerce's job
        if (self.allow_off and value in (0, 1)) or (value >= 1 and value % 2 == 1):
            return None
        return f"expected {self.describe()}, got {value!r}"


Rule = Range | Choice | OddSize

#: ranges used by many keys, named once
AT_LEAST_0 = Range(low=0)
AT_LEAST_1 = Range(low=1)
POSITIVE = Range(low=0, low_open=True)
PROBABILITY = Range(0, 1, what="a probability")
FRACTION = Range(0, 1)
SEED = Range(0, 2**32 - 1)  # numpy's seed range

#: ``data.pipeline``: see :func:`lrpose_bench.engine.cell.use_crop_store`
PIPELINES = ("auto", "reference", "crop_store")
#: which split a run scores: ``val`` (reported numbers), ``tune`` (choosing constants, ``sweep``) or
#: ``train`` (a diagnostic: the training images without augmentation, to tell under- from over-fitting)
EVAL_SPLITS = ("val", "tune", "train")
#: ``report.formats`` (``lrpose_bench.report.build.FORMATS``)
REPORT_FORMATS = ("html", "latex", "csv", "json")
#: ``model.init``: how a backbone trained from scratch starts (:func:`lrpose_bench.models.apply_init`)
INIT_SCHEMES = ("official", "kaiming")
#: a number in exponent notation without a dot ("1e-3", "5E-4"), which YAML 1.1 leaves a string
_EXPONENT_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
#: ``train.device``: names only; whether the device exists here is checked when the run starts
#: (:func:`lrpose_bench.engine.distributed.resolve_device`)
DEVICES = Choice(("auto", "cpu", "cuda", "mps"), pattern=r"cuda:[0-9]+", pattern_text="cuda:N")


def _num(value: float | None) -> str:
    return "" if value is None else (str(int(value)) if float(value).is_integer() else f"{value:g}")


def bounded(
    default: Any = dataclasses.MISSING, rule: Rule | None = None, *, factory: Callable[[], Any] | None = None
) -> Any:
    """A schema field whose allowed values (``rule``) live in its metadata, where
    :func:`check_rules` and the configuration reference find them."""
    metadata = {"rule": rule} if rule is not None else {}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def field_rule(cls: type, name: str) -> Rule | None:
    """The rule of field ``name`` of dataclass ``cls`` (``None``: any value of its type)."""
    return next((f.metadata.get("rule") for f in dataclasses.fields(cls) if f.name == name), None)


def _rule_error(where: str, rule: Rule, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}" + (f" ({rule.why})" if rule.why else ""))


def check_rules(obj: Any, path: str = "") -> None:
    """Check every field of dataclass ``obj`` (nested dataclasses too) against its rule; the first
    violation is one :class:`ConfigError` naming the dotted key, what it accepts and the value."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_rules(value, where)
            continue
        rule = f.metadata.get("rule")
        problem = rule.problem(value) if rule is not None else None
        if problem:
            raise _rule_error(f"config key {where}", rule, problem)


def check_value(cls: type, name: str, value: Any, where: str) -> None:
    """Check one value against the rule of field ``name`` of ``cls``, for values that reach a key
    another way (each of ``--seeds 0,1,2`` is a ``seed``); ``where`` names it in the message."""
    rule = field_rule(cls, name)
    problem = rule.problem(value) if rule is not None else None
    if problem:
        raise _rule_error(where, rule, problem)


# ---------------------------------------------------------------------------------- schema
@dataclass
class SynthConfig:
    """SynthPose, the embedded procedural data set (see ``lrpose_bench.synthpose``)."""

    seed: int = bounded(0, AT_LEAST_0)
    num_train_images: int = bounded(1400, AT_LEAST_1)
    num_val_images: int = bounded(200, AT_LEAST_1)
    #: the tune split: constants are chosen on it (``lrpose-bench sweep``), never on val
    num_tune_images: int = bounded(200, AT_LEAST_1)
    image_height: int = bounded(192, Range(low=32, why="pixels; a figure needs room"))
    image_width: int = bounded(192, Range(low=32, why="pixels; a figure needs room"))
    max_persons: int = bounded(3, AT_LEAST_1)
    multi_person_prob: float = bounded(0.3, PROBABILITY)
    occlusion_prob: float = bounded(0.25, PROBABILITY)
    truncation_prob: float = bounded(0.15, PROBABILITY)


@dataclass
class CropStoreConfig:
    """The fast input path's decode-once crop store (``lrpose_bench.data.crop_store``).

    ``oversample``: store pixel density relative to the un-augmented crop at the largest input size
    (1.0 = same density; 1/(1-sf) ≈ 1.54 never up-samples the store, at 2.4× the disk). ``margin_px``:
    store pixels added on each side beyond the largest augmented box (bilinear taps at the border).
    ``workers``: decode threads while building (OpenCV releases the GIL). ``root``: where stores
    live (default ``<data.cache_dir>/crop_store``). ``max_gb``: the largest store a run may build;
    COCO train is ~5.6 GB at 64×48, ~22 GB at 128×96, ~87 GB at 256×192, where decoding is no
    longer the bottleneck anyway (``data.pipeline: auto`` then keeps the reference path).
    """

    oversample: float = bounded(1.0, POSITIVE)
    margin_px: int = bounded(2, AT_LEAST_0)
    workers: int = bounded(2, AT_LEAST_1)
    root: str | None = None
    max_gb: float = bounded(32.0, POSITIVE)


@dataclass
class DataConfig:
    """Which data set, where, and how person boxes are made."""

    source: str = "synth"
    cache_dir: str = "~/.cache/lrpose-bench"
    synth: SynthConfig = field(default_factory=SynthConfig)
    coco_root: str | None = None
    train_annotations: str = "annotations/person_keypoints_train2017.json"
    val_annotations: str = "annotations/person_keypoints_val2017.json"
    train_images: str = "train2017"
    val_images: str = "val2017"
    person_boxes: str | None = None
    box_score_threshold: float = bounded(0.0, FRACTION)
    box_padding: float = bounded(1.25, POSITIVE)
    min_keypoints: int = bounded(1, AT_LEAST_0)
    max_train_instances: int | None = bounded(None, Range(low=1, why="null uses every instance"))
    max_val_instances: int | None = bounded(None, Range(low=1, why="null uses every instance"))
    image_cache_mb: int = bounded(1024, AT_LEAST_0)
    #: training input pipeline: ``reference`` (decode + cv2 warp + numpy targets per instance, the
    #: reference), ``crop_store`` (decode-once store + batched grid_sample + torch targets on the
    #: training device), ``auto`` (crop_store on CUDA with ``degrade: clean``, else reference)
    pipeline: str = bounded("auto", Choice(PIPELINES))
    #: the split that is scored: ``val`` for reported numbers, ``tune`` while choosing constants
    #: (``lrpose-bench sweep`` sets it; a constant chosen on val would be selection on the test set),
    #: ``train`` to diagnose fitting (train AP near val AP: under-fitting; far above: over-fitting)
    eval_split: str = bounded("val", Choice(EVAL_SPLITS))
    #: ``unbiased``: UDP's data processing, every method's default; ``biased``: HRNet's (box onto
    #: ``w`` px, ``joints / feat_stride``, ``int(x + 0.5)`` centres, 1-px flip-test shift), to
    #: reproduce the paper's HRNet/SimpleBaseline/DARK rows; reference input pipeline only
    coordinates: str = bounded("unbiased", Choice(("unbiased", "biased")))
    #: COCO: train2017 images held out as the tune split (a fixed slice drawn with ``tune_seed``,
    #: removed from training whenever > 0); 0 = no tune split. SynthPose generates its own.
    tune_images: int = bounded(0, AT_LEAST_0)
    tune_seed: int = bounded(0, AT_LEAST_0)
    crop_store: CropStoreConfig = field(default_factory=CropStoreConfig)


@dataclass
class AugmentConfig:
    """Training augmentation (HRNet/UDP reference: scale 0.35 → [0.65,1.35], rotation 45° w.p. 0.6)."""

    scale_factor: float = bounded(0.35, Range(0, 1, high_open=True, why="scales are drawn from [1 - s, 1 + s]"))
    rotation_factor: float = bounded(45.0, Range(0, 180, why="degrees"))
    rotation_prob: float = bounded(0.6, PROBABILITY)
    flip_prob: float = bounded(0.5, PROBABILITY)
    half_body_prob: float = bounded(0.0, PROBABILITY)
    half_body_min_joints: int = bounded(8, AT_LEAST_0)


@dataclass
class TrainConfig:
    """Optimiser and schedule (paper: Adam 1e-3, ×0.1 at 170 and 200 of 210 epochs)."""

    epochs: int = bounded(210, AT_LEAST_1)
    batch_size: int = bounded(32, AT_LEAST_1)
    lr: float = bounded(1.0e-3, POSITIVE)
    lr_milestones: list[int] = bounded(rule=AT_LEAST_1, factory=lambda: [170, 200])
    lr_gamma: float = bounded(0.1, Range(0, 1, low_open=True, why="the factor at each milestone"))
    schedule_reference_epochs: int = bounded(210, AT_LEAST_1)
    #: linear learning-rate warm-up over the first N optimisation steps (0: none, the paper's schedule)
    warmup_iters: int = bounded(0, AT_LEAST_0)
    #: the warm-up's first factor of ``lr`` (mmpose LinearLR start_factor)
    warmup_start_factor: float = bounded(0.001, Range(0, 1, low_open=True, why="a factor of train.lr"))
    weight_decay: float = bounded(0.0, AT_LEAST_0)
    num_workers: int = bounded(0, AT_LEAST_0)
    threads: int = bounded(0, Range(low=0, why="0 leaves torch's default"))
    #: cells trained at once on a CPU, each in its own process on threads // parallel_cells cores
    #: (engine/parallel.py: a small network's step does not scale across cores)
    parallel_cells: int = bounded(1, AT_LEAST_1)
    checkpoint_every_iters: int = bounded(0, Range(low=0, why="0 checkpoints at epoch ends only"))
    deterministic: bool = True
    device: str = bounded("auto", DEVICES)
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    #: Adam's fused kernel (CUDA, and the CPU since PyTorch 2.4); false: the per-parameter loop
    fused_adam: bool = True
    #: capture forward+loss+backward+Adam in one CUDA graph and replay it (CUDA, one process; ignored on a CPU)
    cuda_graphs: bool = False
    #: steps between host synchronisations (non-finite loss check, progress bar); 0 = 1 on a CPU, 50 on CUDA
    sync_every: int = bounded(0, AT_LEAST_0)
    #: budget-matched control: a method that trains fewer epochs than ``epochs · (1 + matched_extra_ratio)``
    #: (every single-stage baseline) continues its last stage for the difference, at the schedule's
    #: learning rate there (the post-milestone rate CAL's stage 2 uses), so "the MGM helps" is not
    #: "more epochs help"
    match_budget: bool = True
    #: the extra epochs CAL's stage 2 adds (paper: 40 after 210); equal to cal.yaml ``stage2_ratio`` (tested)
    matched_extra_ratio: float = bounded(40.0 / 210.0, Range(0, 10, why="a fraction of train.epochs"))
    #: fractions of ``epochs`` at which the weights are kept and scored too (the budget curve; 1.0 is
    #: every method's score at the base budget, CAL's stage 1)
    snapshot_fractions: list[float] = bounded(
        rule=Range(0, 1, low_open=True, increasing=True), factory=lambda: [0.25, 0.5, 1.0]
    )

    def milestones(self) -> list[int]:
        """Milestones scaled to this profile's epoch count (quick profile: proportional)."""
        scale = self.epochs / float(self.schedule_reference_epochs)
        return sorted({max(1, round(m * scale)) for m in self.lr_milestones})


@dataclass
class EvalConfig:
    """Evaluation protocol (HRNet reference: flip test, keypoint score threshold 0.2, OKS-NMS 0.9)."""

    flip_test: bool = True
    batch_size: int = bounded(64, AT_LEAST_1)
    kpt_score_threshold: float = bounded(0.2, FRACTION)
    oks_nms_threshold: float = bounded(0.9, FRACTION)
    use_gt_boxes: bool = True
    bootstrap_samples: int = bounded(200, Range(low=0, why="0 turns the bootstrap off"))


@dataclass
class ModelConfig:
    """Backbone by registry name; optional local checkpoint for its weights; how a from-scratch net starts."""

    backbone: str = "hrnet-w32"
    pretrained: str | None = None
    init: str = bounded("official", Choice(INIT_SCHEMES))


@dataclass
class ReportConfig:
    """Report outputs."""

    formats: list[str] = bounded(rule=Choice(REPORT_FORMATS), factory=lambda: list(REPORT_FORMATS))
    displacement_bins: list[float] = bounded(rule=Range(low=0, increasing=True), factory=lambda: [0.0, 1.0, 2.0, 3.0])
    keypoint_error_ks: list[float] = bounded(
        rule=Range(0, 1, low_open=True, high_open=True, increasing=True), factory=lambda: [0.5, 0.85]
    )
    keypoint_error_match_oks: float = bounded(0.1, Range(0, 1, low_open=True, high_open=True))
    keypoint_error_collapse_ratio: float = bounded(0.25, Range(0, 1, low_open=True, high_open=True))


@dataclass
class BenchConfig:
    """Top-level configuration of one run (shared by every cell)."""

    profile: str = "paper"
    seed: int = bounded(0, SEED)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    degrade: str = "clean"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Stable hash of the configuration (used by the regression baseline)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ validation
def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping → ``{"a.b": value}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def type_name(tp: Any) -> str:
    """Readable type of a schema field: ``float``, ``str or null``, ``list of int``, ``one of a, b``."""
    origin = get_origin(tp)
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against type hint ``tp``; return it (ints accepted for floats)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:  # a method switch: ablation names are checked where they are parsed
        allowed = get_args(tp)
        if any(value == a and type(value) is type(a) for a in allowed):
            return value
        raise ConfigError(f"config key {path}: expected one of {', '.join(str(a) for a in allowed)}; got {value!r}")
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            try:
                return _coerce(value, option, path)
            except ConfigError as error:
                errors.append(error)
        raise ConfigError(f"config key {path}: expected {type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key {path}: expected null, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {path}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_mapping(tp, value, path)
    if origin is list:
        (inner,) = get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {path}: expected {type_name(tp)}, got {value!r}")
        return [_coerce(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)) or (args and args[-1] is not Ellipsis and len(value) != len(args)):
            raise ConfigError(f"config key {path}: expected {type_name(tp)}, got {value!r}")
        inner_types = [args[0]] * len(value) if args and args[-1] is Ellipsis else list(args)
        return tuple(_coerce(v, t, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, inner_types)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {path}: expected bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {path}: expected int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
            # YAML 1.1 (PyYAML) reads "1e-3" (no dot) as a string; it is the float a user means
            return float(value)
        raise ConfigError(f"config key {path}: expected float, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key {path}: expected str, got {value!r}")
    return value


def from_mapping(cls: type, data: Mapping[str, Any], path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"unknown config key {where!r}; known keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        kwargs[key] = _coerce(value, hints[key], where)
    obj = cls(**kwargs)
    check_rules(obj, path)  # the ranges in the fields' metadata, checked once here
    return obj


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``override`` wins."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping with a clear error for missing or malformed files."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c = value`` inside nested dicts."""
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` with a YAML-typed value (``train.lr=0.002``, ``flip_test=false``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, for example train.epochs=5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(
    profile: str = "quick",
    user_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> BenchConfig:
    """Merge defaults, profile, user file and dotted overrides into a validated :class:`BenchConfig`."""
    root = config_dir()
    data = read_yaml(root / "defaults.yaml")
    profile_path = root / "profiles" / f"{profile}.yaml"
    if not profile_path.is_file():
        known = sorted(p.stem for p in (root / "profiles").glob("*.yaml"))
        raise ConfigError(f"unknown profile {profile!r}; known profiles: {', '.join(known)}")
    data = deep_merge(data, read_yaml(profile_path))
    data["profile"] = profile
    if user_file is not None:
        data = deep_merge(data, read_yaml(Path(user_file)))
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    cfg = from_mapping(BenchConfig, data)
    check_rules(cfg)  # every range and choice of the schema, once, before any work
    return cfg


def validate_augment_config(cfg: AugmentConfig, path: str = "augment") -> None:
    """Reject augmentation settings outside their schema ranges, naming the dotted key (for an
    :class:`AugmentConfig` built in code rather than loaded; :func:`load_config` checks them all)."""
    check_rules(cfg, path)


# --------------------------------------------------------------------------- method params
def method_param_data(method_name: str, resolution: Resolution) -> dict[str, Any]:
    """Method constants from ``configs/methods/<name>.yaml`` for one resolution (no validation)."""
    path = config_dir() / "methods" / f"{method_name}.yaml"
    if not path.is_file():
        return {}
    data = read_yaml(path)
    unknown = set(data) - {"defaults", "per_resolution", "notes"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}; use defaults/per_resolution/notes")
    params = dict(data.get("defaults") or {})
    per_res = data.get("per_resolution") or {}
    for key, values in per_res.items():
        if Resolution.parse(str(key)) == resolution:
            params.update(values or {})
    return params


def resolve_method_params(
    params_cls: type,
    method_name: str,
    resolution: Resolution,
    ablation: Mapping[str, Any] | None = None,
    extra_data: Mapping[str, Any] | None = None,
) -> Any:
    """Validated ``Params`` for a method at a resolution, with ablation switches applied."""
    data = method_param_data(method_name, resolution)
    if extra_data:
        data.update(extra_data)
    if ablation:
        names = {f.name for f in dataclasses.fields(params_cls)} if dataclasses.is_dataclass(params_cls) else set()
        for key in ablation:
            if key not in names:
                raise ConfigError(
                    f"unknown ablation key {key!r} for method {method_name!r}; "
                    f"known keys: {', '.join(sorted(names)) or '(none)'}"
                )
        data.update(ablation)
    if not dataclasses.is_dataclass(params_cls):
        return None
    return from_mapping(params_cls, data, f"methods.{method_name}")
