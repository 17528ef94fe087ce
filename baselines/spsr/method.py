"""SPSR+pose and bicubic+pose (paper Sec. 5.4, Table 2): super-resolve the 64×48 crop ×4 to 256×192,
then a pose model trained at 256×192 estimates pose on it.

How this plugs into the engine (``lrpose_bench/engine/cell.py``): the cell's resolution is 64×48;
:meth:`SrPoseMethod.train_resolution` returns 256×192, the size the engine crops at for training and
evaluation. The cell builds ONE instance (at 64×48), which delegates ``encode``/``loss``/``decode``/
flip to the inner method (``hrnet`` or ``udp``, built at 256×192 with its constants from
``configs/methods/<inner>.yaml``). The engine's pre-stage (``cell.py::run_pre_stage``) calls
:meth:`prepare` on that instance before pose training: it trains the generator (or reuses
``run_dir/_sr/<key>/sr.pt``) and writes ``run_dir/sr_quality.json``. The engine then evaluates at
the pose network at 256×192 on the cell's *native* 64×48 crop (:meth:`eval_crop_resolution`: the
very crop, the same bilinear warp of the full image, that every native 64×48 method sees; the paper
super-resolves *the* low-resolution image). :meth:`eval_input_transform` super-resolves it (SPSR)
or bicubic-upsamples it ×4, and the crop matrix is lifted ×4 into the 256×192 frame
(``data/dataset.py::lift_matrix``), so back-projection stays exact. The generator is trained on
(HR crop, its bicubic ×¼ reduction) pairs, the usual SR training; at test time it meets the native
crop, a small domain gap the table states.

What the SR model is: SPSR's generator (RRDB trunk + gradient branch, ``generator.py``) trained
with its pixel, gradient and gradient-branch losses (+ perceptual when VGG19 weights are given); it
lacks SPSR's relativistic GAN terms (and, without local VGG19 weights, the perceptual term), so it
is the PSNR-oriented SPSR generator, not SPSR's full GAN training.

SR constants: ``configs/methods/spsr.yaml`` (``sr_config`` names another file in
``configs/methods/`` for an ablation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from lrpose_bench import comm
from lrpose_bench.baselines.spsr.generator import SPSRGenerator, bicubic_upsample, count_parameters
from lrpose_bench.baselines.spsr.train_sr import (
    SpsrConfig,
    SrCropDataset,
    cache_key,
    denormalise,
    load_generator,
    renormalise,
    save_generator,
    sr_quality,
    super_resolve,
    train_generator,
    write_quality,
)
from lrpose_bench.config import resolve_method_params
from lrpose_bench.data.degrade import run_source_transform
from lrpose_bench.errors import ConfigError
from lrpose_bench.method import Method, MethodContext, TrainingStage
from lrpose_bench.registry import METHODS, register_method
from lrpose_bench.resolution import Resolution


@dataclass
class SrPoseParams:
    """Switches of an SR+pose method; the SR constants live in ``configs/methods/<sr_config>.yaml``."""

    sr_config: str = "spsr"


def load_sr_config(name: str) -> SpsrConfig:
    """Validated SR constants from ``configs/methods/<name>.yaml`` (``defaults`` section)."""
    from lrpose_bench.config import config_dir

    if not (config_dir() / "methods" / f"{name}.yaml").is_file():
        raise ConfigError(f"sr_config {name!r}: no file configs/methods/{name}.yaml; use spsr or add that file")
    # the SR constants do not depend on the pose resolution: any resolution selects ``defaults``
    return resolve_method_params(SpsrConfig, name, Resolution(64, 48))


class SrPoseMethod(Method):
    """Base of ``spsr+<inner>`` / ``bicubic+<inner>``: an upsampler in front of an inner pose method."""

    inner_name: ClassVar[str] = ""
    upsampler: ClassVar[str] = "spsr"  # or "bicubic"
    Params = SrPoseParams

    def __init__(self, params: Any, context: MethodContext) -> None:
        super().__init__(params, context)
        self.sr = load_sr_config(params.sr_config)
        self.lr_res = Resolution.parse(self.sr.lr_resolution)
        self.hr_res = Resolution(self.lr_res.height * self.sr.scale, self.lr_res.width * self.sr.scale)
        if context.resolution not in (self.lr_res, self.hr_res):
            raise ConfigError(
                f"method {self.name!r} super-resolves {self.lr_res} crops x{self.sr.scale} to {self.hr_res} "
                f"(configs/methods/{params.sr_config}.yaml lr_resolution); run it with --res {self.lr_res}, "
                f"not {context.resolution}"
            )
        inner_cls = METHODS.get(self.inner_name)
        inner_params = resolve_method_params(inner_cls.Params, self.inner_name, self.hr_res)
        self.inner: Method = inner_cls(inner_params, MethodContext(self.hr_res, context.num_joints))
        self.codec_name = f"{self.upsampler} x{self.sr.scale} + {self.inner.codec_name}"
        self.generator: SPSRGenerator | None = None
        self.sr_info: dict[str, Any] = {}
        self.device = torch.device("cpu")
        self.eval_chunk = 16

    # --------------------------------------------------------------- delegation to the inner method
    @property
    def loss_name(self) -> str:
        """The inner pose method's loss (the SR network's losses are in ``sr_quality.json``)."""
        return self.inner.loss_name

    def train_resolution(self) -> Resolution:
        return self.hr_res

    def head_channels(self) -> int:
        return self.inner.head_channels()

    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        return self.inner.encode(joints, visible)

    def encode_batch(self, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
        """The inner method's batched torch twin (GPU input path, no host sync), as ``encode`` delegates."""
        return self.inner.encode_batch(joints, visible)

    def loss(self, outputs: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> dict[str, Tensor]:
        return self.inner.loss(outputs, batch, stage)

    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        return self.inner.decode(outputs)

    def coarse_argmax(self, outputs: Tensor) -> Tensor:
        return self.inner.coarse_argmax(outputs)

    def heatmaps(self, outputs: Tensor) -> Tensor:
        return self.inner.heatmaps(outputs)

    def flip_outputs(self, outputs: Tensor, flip_index: Tensor) -> Tensor:
        return self.inner.flip_outputs(outputs, flip_index)

    def stages(self, total_epochs: int) -> list[TrainingStage]:
        return self.inner.stages(total_epochs)

    # the pose codec's declared hooks are the inner method's
    @property
    def codec_bound_px(self) -> float | None:  # type: ignore[override]
        return self.inner.codec_bound_px

    def oracle_outputs(self, targets: Mapping[str, Tensor]) -> Tensor:
        return self.inner.oracle_outputs(targets)

    def uses_mgm(self, stage: TrainingStage) -> bool:
        return self.inner.uses_mgm(stage)

    def offset_weight(self, heatmaps: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> Tensor:
        return self.inner.offset_weight(heatmaps, batch, stage)

    def __getattr__(self, name: str) -> Any:
        # other attributes of the inner method (e.g. its codec constants such as ``sigma``)
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def describe_params(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "sr_config": self.params.sr_config,
            "upsampler": self.upsampler,
            "inner": self.inner_name,
            "inner_params": self.inner.describe_params(),
            "lr_resolution": str(self.lr_res),
            "hr_resolution": str(self.hr_res),
            "scale": self.sr.scale,
            "lr_degradation": self.degradation_text(),
        }
        if self.upsampler == "spsr":
            info["sr"] = dataclasses.asdict(self.sr)
            if self.sr_info:
                info["sr_run"] = {k: v for k, v in self.sr_info.items() if k != "log"}
        return info

    def degradation_text(self) -> str:
        return (
            f"LR crop = bicubic x1/{self.sr.scale} (antialias={self.sr.antialias}, 8-bit={self.sr.quantize_lr}) "
            f"of the {self.hr_res} HR crop"
        )

    # ---------------------------------------------------------------------------- SR stage
    def prepare(
        self,
        *,
        bundle: Any,
        cfg: Any,
        run_dir: Path,
        cell_dir: Path,
        device: torch.device,
        progress: bool = True,
        image_cache: Any = None,
    ) -> None:
        """The engine's pre-stage: train (or reuse) the SR generator that this instance's
        :meth:`eval_input_transform` applies; write SR quality (SPSR and bicubic) as JSON."""
        self.device = torch.device(device)
        if self.upsampler != "spsr":
            return
        from lrpose_bench.data.dataset import PoseDataset

        profile_name, profile = self.sr.profile_for(cfg.profile)
        data_identity = {
            "dataset": bundle.name,
            "train_annotations": str(bundle.train.annotation_file),
            "num_train": len(bundle.train.instances),
            "val_annotations": str(bundle.val.annotation_file),
            "num_val": len(bundle.val.instances),
            # the input pipeline of pose training does not change what the SR network learns
            "data": {k: v for k, v in dataclasses.asdict(cfg.data).items() if k not in ("pipeline", "crop_store")},
            "augment": dataclasses.asdict(cfg.augment),
            "degrade": cfg.degrade,
            "seed": cfg.seed,
        }
        key = cache_key(self.sr, profile_name, data_identity)
        folder = Path(run_dir) / "_sr" / key
        ckpt = folder / "sr.pt"
        quality_path = folder / "sr_quality.json"
        writer = comm.is_writer()
        if writer and not ckpt.is_file():
            self._train_generator(bundle, cfg, profile, profile_name, key, ckpt, image_cache, progress)
        # under DDP rank 0 trains the SR network once; the others wait here and load its checkpoint
        # (a rank on a node without the shared run folder trains its own copy, same seed)
        comm.barrier()
        if not ckpt.is_file():
            self._train_generator(bundle, cfg, profile, profile_name, key, ckpt, image_cache, progress)
        generator, meta = load_generator(ckpt, profile, self.sr)
        generator = generator.to(self.device)
        self.generator = generator
        self.sr_info = meta
        self.eval_chunk = profile.eval_batch_size
        if not writer:  # SR quality is measured and written by rank 0 only
            return
        if quality_path.is_file():
            import json

            quality = json.loads(quality_path.read_text())
        else:
            val_pose = PoseDataset(
                bundle.val,
                self.inner,
                self.hr_res,
                train=False,
                box_padding=cfg.data.box_padding,
                image_cache=image_cache,
                source_transform=run_source_transform(cfg, train=False),
            )
            val_set = SrCropDataset(val_pose, self.sr, train=False)
            quality = sr_quality(
                generator,
                val_set,
                self.sr,
                device=self.device,
                batch_size=profile.eval_batch_size,
                max_crops=profile.max_val_crops,
                progress=progress,
            )
            quality.update(
                {
                    "key": key,
                    "profile": profile_name,
                    "dataset": bundle.val.name,
                    "losses_used": meta.get("losses_used"),
                    "gan_terms": meta.get("gan_terms"),
                    "train_iters": meta.get("iters"),
                    "train_seconds": meta.get("train_seconds"),
                    "generator": meta.get("generator"),
                    "generator_params": meta.get("params"),
                }
            )
        write_quality([quality_path, Path(run_dir) / "sr_quality.json", Path(cell_dir) / "sr_quality.json"], quality)

    def _train_generator(
        self,
        bundle: Any,
        cfg: Any,
        profile: Any,
        profile_name: str,
        key: str,
        ckpt: Path,
        image_cache: Any,
        progress: bool,
    ) -> None:
        """Train the SR generator on the benchmark's own training crops and save it to ``ckpt``."""
        from lrpose_bench.data.dataset import PoseDataset

        train_pose = PoseDataset(
            bundle.train,
            self.inner,
            self.hr_res,
            train=False,
            augment=cfg.augment,
            box_padding=cfg.data.box_padding,
            seed=cfg.seed,
            image_cache=image_cache,
            source_transform=run_source_transform(cfg, train=True),
        )
        train_set = SrCropDataset(train_pose, self.sr, train=True, seed=cfg.seed, patch_hr=profile.patch_hr)
        generator, meta = train_generator(
            train_set, profile, self.sr, device=self.device, seed=cfg.seed, progress=progress
        )
        meta.update(
            {
                "key": key,
                "profile": profile_name,
                "params": count_parameters(generator),
                "generator": {
                    "nf": profile.nf,
                    "nb": profile.nb,
                    "gc": profile.gc,
                    "taps": list(generator.taps),
                    "scale": self.sr.scale,
                    "bicubic_skip": profile.bicubic_skip,
                },
                "degradation": self.degradation_text(),
            }
        )
        save_generator(ckpt, generator, meta)

    def eval_crop_resolution(self) -> Resolution:
        """The native low-resolution crop (64×48): what every native 64×48 method sees."""
        return self.context.resolution

    def eval_input_transform(self) -> Callable[[Tensor], Tensor]:
        """``(N, 3, 64, 48)`` normalised native LR crops → ``(N, 3, 256, 192)``, normalised, after
        SPSR (or bicubic) ×4 (see the module docstring)."""
        if self.upsampler == "spsr" and self.generator is None:
            raise ConfigError(
                f"method {self.name!r}: the SR generator is not ready; prepare() must run before evaluation"
            )
        sr, generator = self.sr, self.generator
        chunk = max(1, self.eval_chunk)

        def transform(images: Tensor) -> Tensor:
            lr01 = denormalise(images.float())
            if generator is None:
                up = bicubic_upsample(lr01, sr.scale)
            else:
                generator.to(lr01.device)
                up = super_resolve(generator, lr01, chunk)
            return renormalise(up).to(images.dtype)

        return transform


@register_method
class SpsrHrnet(SrPoseMethod):
    name = "spsr+hrnet"
    description = (
        "SPSR generator x4 on the native 64x48 crop (no GAN terms) then HRNet heatmaps trained at 256x192 (Table 2)"
    )
    inner_name = "hrnet"
    upsampler = "spsr"


@register_method
class SpsrUdp(SrPoseMethod):
    name = "spsr+udp"
    description = "SPSR generator x4 on the native 64x48 crop (no GAN terms) then UDP trained at 256x192 (Table 2)"
    inner_name = "udp"
    upsampler = "spsr"


@register_method
class BicubicHrnet(SrPoseMethod):
    name = "bicubic+hrnet"
    description = "control: bicubic x4 of the native 64x48 crop then HRNet trained at 256x192"
    inner_name = "hrnet"
    upsampler = "bicubic"


@register_method
class BicubicUdp(SrPoseMethod):
    name = "bicubic+udp"
    description = "control: bicubic x4 of the native 64x48 crop then UDP trained at 256x192"
    inner_name = "udp"
    upsampler = "bicubic"
