"""SR training for SPSR+pose (paper Table 2) on the benchmark's own training split.

Data: the same unbiased affine person crop as pose training, at the HR size 256×192, with the pose
augmentation (scale, rotation, flip: ``PoseDataset.crop_params``); the LR image is its bicubic ×4
reduction to 64×48 (antialiased like MATLAB ``imresize``, clamped, rounded to 8 bits) — the SR
training degradation, and exactly what the evaluation feeds the generator (:func:`degrade`).
Optionally, training uses scale-aligned HR patches (the reference trains on 128×128 HR patches)
cut from the full crop after the LR image was made from the whole crop.

Losses (Maclory/SPSR ``code/models/SPSR_model.py``): ``w_pix·L1(SR, HR)`` +
``w_grad·MSE(Get_gradient(SR), Get_gradient(HR))`` + ``w_branch·L1(branch, Get_gradient_nopadding(HR))``
[+ ``w_fea·L1(VGG19_34(SR), VGG19_34(HR))`` when a local VGG19 weights file is given]. The reference
uses ``w_pix = 1e-2`` because the perceptual term (weight 1) dominates; without it we use
``pixel_without_perceptual`` (1.0 by default: the weight of ESRGAN's PSNR-oriented RRDB
pre-training, from which SPSR starts). The two relativistic GAN terms (5e-3 each) are not
implemented: the Table 2 question is whether *recovered resolution* helps pose, and the PSNR/SSIM
we report is measured for a fidelity-trained generator. Every run records which terms it used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from lrpose_bench.baselines.spsr.generator import SPSRGenerator, bicubic_upsample, build_generator, count_parameters
from lrpose_bench.baselines.spsr.gradient import gradient_map
from lrpose_bench.baselines.spsr.metrics import psnr, ssim, to_uint8_image
from lrpose_bench.config import Range, bounded
from lrpose_bench.data.dataset import MEAN, STD, PoseDataset
from lrpose_bench.data.transforms import crop_matrix, warp_image
from lrpose_bench.errors import CheckpointError, ConfigError
from lrpose_bench.store import atomic_write, write_json

SR_FORMAT = "lrpose-bench-spsr-v1"


# ------------------------------------------------------------------------------------ config
@dataclass
class SrLossConfig:
    """Loss weights (``configs/methods/spsr.yaml`` ``losses``; reference values by default)."""

    pixel: float = 1.0e-2
    pixel_without_perceptual: float = 1.0
    gradient_pixel: float = 1.0e-2
    branch_pixel: float = 0.5
    perceptual: float = 1.0
    perceptual_layer: int = 34
    vgg19_weights: str | None = None


@dataclass
class SrProfileConfig:
    """Generator size and training schedule of one profile (``quick`` or ``paper``)."""

    nf: int = 64
    nb: int = 23
    gc: int = 32
    taps: list[int] | None = None
    bicubic_skip: bool = False
    iters: int = 500000
    batch_size: int = 30
    patch_hr: list[int] | None = None
    lr: float = 1.0e-4
    beta1: float = 0.9
    lr_milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.5
    branch_init_iters: int = 0
    eval_batch_size: int = 16
    max_val_crops: int | None = None
    log_every: int = 50


@dataclass
class SpsrConfig:
    """Everything about the SR stage of SPSR+pose (``configs/methods/spsr.yaml``)."""

    scale: int = bounded(4, Range(low=2, why="4 in the paper"))
    lr_resolution: str = "64x48"
    antialias: bool = True
    quantize_lr: bool = True
    sr_profile: Literal["quick", "paper"] | None = None
    losses: SrLossConfig = field(default_factory=SrLossConfig)
    quick: SrProfileConfig = field(default_factory=SrProfileConfig)
    paper: SrProfileConfig = field(default_factory=SrProfileConfig)

    def profile_for(self, run_profile: str) -> tuple[str, SrProfileConfig]:
        """The SR profile of a run: ``sr_profile`` if set, else the run's profile when it is
        ``quick``/``paper``, else ``quick`` (any other profile is a small/fast one)."""
        name = self.sr_profile or (run_profile if run_profile in ("quick", "paper") else "quick")
        profile = getattr(self, name)
        if profile.patch_hr is not None and (
            len(profile.patch_hr) != 2 or any(p <= 0 or p % self.scale for p in profile.patch_hr)
        ):
            raise ConfigError(
                f"methods.spsr.{name}.patch_hr {profile.patch_hr}: give [height, width], multiples of scale={self.scale}"
            )
        return name, profile


# ----------------------------------------------------------------------------- degradation
def denormalise(images: Tensor) -> Tensor:
    """ImageNet-normalised (N, 3, H, W) → RGB in [0, 1] (inverse of ``data.dataset.normalise``)."""
    mean = torch.as_tensor(MEAN, dtype=images.dtype, device=images.device)[None, :, None, None]
    std = torch.as_tensor(STD, dtype=images.dtype, device=images.device)[None, :, None, None]
    return (images * std + mean).clamp(0.0, 1.0)


def renormalise(images01: Tensor) -> Tensor:
    """RGB in [0, 1] → ImageNet-normalised."""
    mean = torch.as_tensor(MEAN, dtype=images01.dtype, device=images01.device)[None, :, None, None]
    std = torch.as_tensor(STD, dtype=images01.dtype, device=images01.device)[None, :, None, None]
    return (images01 - mean) / std


def degrade(hr: Tensor, scale: int, antialias: bool = True, quantize: bool = True) -> Tensor:
    """The LR image: bicubic ×1/scale of the HR crop (N, 3, H, W) in [0, 1], clamped, and rounded
    to the 8-bit grid when ``quantize`` (an LR image is an 8-bit image)."""
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of the SR scale {scale}")
    lr = F.interpolate(
        hr, size=(h // scale, w // scale), mode="bicubic", align_corners=False, antialias=antialias
    ).clamp(0.0, 1.0)
    if quantize:
        lr = torch.round(lr * 255.0) / 255.0
    return lr


# ------------------------------------------------------------------------------------ data
class SrCropDataset(Dataset):
    """HR person crops (and their LR images) from a pose dataset's crop rule.

    ``pose_set`` is a ``PoseDataset`` at the HR resolution built with ``train=False``: only its
    crop rule (``crop_params``: box → centre/size, plus augmentation from an rng) and image cache
    are used, so SR and pose training see the same crops.
    """

    def __init__(
        self, pose_set: PoseDataset, sr: SpsrConfig, *, train: bool, seed: int = 0, patch_hr: list[int] | None = None
    ) -> None:
        self.pose_set = pose_set
        self.sr = sr
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.patch_hr = patch_hr

    def __len__(self) -> int:
        return len(self.pose_set)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def hr_crop(self, index: int, rng: np.random.Generator | None) -> Tensor:
        ds = self.pose_set
        params = ds.crop_params(index, rng)
        matrix = crop_matrix(params, ds.resolution.size)
        image = ds.cache.read(ds.split.instances[index].image_path)
        if ds.source_transform is not None:
            image = ds.source_transform(image, index)
        crop = warp_image(image, matrix, ds.resolution.size)
        return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float() / 255.0

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index, 7]) if self.train else None
        hr = self.hr_crop(index, rng)
        lr = degrade(hr[None], self.sr.scale, self.sr.antialias, self.sr.quantize_lr)[0]
        if self.patch_hr is not None and rng is not None:
            s = self.sr.scale
            ph, pw = self.patch_hr
            h, w = hr.shape[-2:]
            top = int(rng.integers(0, (h - ph) // s + 1))
            left = int(rng.integers(0, (w - pw) // s + 1))
            hr = hr[:, top * s : top * s + ph, left * s : left * s + pw]
            lr = lr[:, top : top + ph // s, left : left + pw // s]
        return {"hr": hr.contiguous(), "lr": lr.contiguous()}


# ---------------------------------------------------------------------------------- losses
class VGGFeatures(nn.Module):
    """VGG19 features up to layer ``layer`` (34: conv5_4 before ReLU, no BN), ImageNet input
    normalisation, frozen: SPSR's ``define_F(use_bn=False)`` for the perceptual loss. Weights come
    only from a local file the user gives (nothing is downloaded)."""

    def __init__(self, weights_path: str, layer: int = 34) -> None:
        super().__init__()
        import torchvision

        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"methods.spsr.losses.vgg19_weights: file {path} not found; give a local torchvision VGG19 state dict or null"
            )
        vgg = torchvision.models.vgg19(weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            vgg.load_state_dict(state)
        except Exception as error:
            raise CheckpointError(
                f"{path}: not a torchvision VGG19 state dict ({type(error).__name__}); "
                "save one with torch.save(torchvision.models.vgg19(weights=...).state_dict(), path)"
            ) from None
        self.features = vgg.features[: layer + 1].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def forward(self, images01: Tensor) -> Tensor:
        return self.features((images01 - self.mean) / self.std)


class SrLoss(nn.Module):
    """The generator objective (module docstring); ``used`` names the active terms and weights."""

    def __init__(self, cfg: SrLossConfig) -> None:
        super().__init__()
        self.vgg = (
            VGGFeatures(cfg.vgg19_weights, cfg.perceptual_layer) if cfg.vgg19_weights and cfg.perceptual > 0 else None
        )
        pixel = cfg.pixel if self.vgg is not None else cfg.pixel_without_perceptual
        self.weights = {"pixel_l1": pixel, "gradient_mse": cfg.gradient_pixel, "branch_l1": cfg.branch_pixel}
        if self.vgg is not None:
            self.weights["perceptual_l1"] = cfg.perceptual
        self.weights = {k: float(v) for k, v in self.weights.items() if v > 0}

    @property
    def used(self) -> dict[str, float]:
        return dict(self.weights)

    def forward(self, grad_out: Tensor, sr: Tensor, hr: Tensor) -> dict[str, Tensor]:
        parts: dict[str, Tensor] = {}
        w = self.weights
        if "pixel_l1" in w:
            parts["pixel_l1"] = w["pixel_l1"] * F.l1_loss(sr, hr)
        if "gradient_mse" in w:
            parts["gradient_mse"] = w["gradient_mse"] * F.mse_loss(
                gradient_map(sr, padding=2), gradient_map(hr, padding=2)
            )
        if "branch_l1" in w:
            parts["branch_l1"] = w["branch_l1"] * F.l1_loss(grad_out, gradient_map(hr, padding=1))
        if self.vgg is not None and "perceptual_l1" in w:
            parts["perceptual_l1"] = w["perceptual_l1"] * F.l1_loss(self.vgg(sr), self.vgg(hr).detach())
        parts["loss"] = sum(parts.values())  # type: ignore[assignment]
        return parts


# -------------------------------------------------------------------------------- training
def _batches(dataset: SrCropDataset, batch_size: int, seed: int) -> Iterator[dict[str, Tensor]]:
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        generator = torch.Generator().manual_seed(seed * 100003 + epoch)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            drop_last=len(dataset) >= batch_size,
            generator=generator,
            num_workers=0,
        )
        yield from loader
        epoch += 1


def _set_branch_init(generator: SPSRGenerator, fusion_only: bool) -> None:
    """SPSR ``Branch_pretrain``: during the first iterations only ``f_*`` parameters train."""
    for name, param in generator.named_parameters():
        param.requires_grad_(name.startswith("f_") or not fusion_only)


def train_generator(
    dataset: SrCropDataset,
    profile: SrProfileConfig,
    sr: SpsrConfig,
    *,
    device: torch.device,
    seed: int = 0,
    progress: bool = True,
) -> tuple[SPSRGenerator, dict[str, Any]]:
    """Train a generator from scratch on ``dataset`` (iteration-based, Adam + MultiStepLR)."""
    torch.manual_seed(seed)
    generator = build_generator(profile.nf, profile.nb, profile.gc, sr.scale, profile.taps, profile.bicubic_skip).to(
        device
    )
    criterion = SrLoss(sr.losses).to(device)
    optimizer = torch.optim.Adam(generator.parameters(), lr=profile.lr, betas=(profile.beta1, 0.999))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, profile.lr_milestones, profile.lr_gamma)
    generator.train()
    log: list[dict[str, float]] = []
    running: dict[str, float] = {}
    t0 = time.perf_counter()
    batches = _batches(dataset, profile.batch_size, seed)
    bar = tqdm(range(profile.iters), desc="train SPSR", disable=not progress, leave=False)
    for step in bar:
        _set_branch_init(generator, step < profile.branch_init_iters)
        batch = next(batches)
        lr_img, hr = batch["lr"].to(device), batch["hr"].to(device)
        grad_out, sr_img, _ = generator(lr_img)
        parts = criterion(grad_out, sr_img, hr)
        if not torch.isfinite(parts["loss"]):
            raise FloatingPointError(f"SPSR training diverged at iteration {step} (loss {parts['loss'].item()})")
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        scheduler.step()
        for key, value in parts.items():
            running[key] = running.get(key, 0.0) + float(value.detach())
        if (step + 1) % max(1, profile.log_every) == 0 or step + 1 == profile.iters:
            count = (step % max(1, profile.log_every)) + 1
            row = {
                "iter": step + 1,
                **{k: v / count for k, v in running.items()},
                "lr": optimizer.param_groups[0]["lr"],
            }
            log.append(row)
            running = {}
            bar.set_postfix(loss=f"{row['loss']:.4f}")
    _set_branch_init(generator, False)
    generator.eval()
    info = {
        "iters": profile.iters,
        "batch_size": profile.batch_size,
        "patch_hr": profile.patch_hr,
        "train_seconds": round(time.perf_counter() - t0, 2),
        "losses_used": criterion.used,
        "gan_terms": "not implemented (reference: 5e-3 RaGAN on image and gradient map)",
        "log": log,
    }
    return generator, info


@torch.no_grad()
def super_resolve(generator: SPSRGenerator, lr01: Tensor, chunk: int = 16) -> Tensor:
    """SR images (N, 3, sH, sW) in [0, 1] from LR images in [0, 1], in chunks (memory at 256×192)."""
    outputs = [generator(lr01[i : i + chunk])[1].clamp(0.0, 1.0) for i in range(0, lr01.shape[0], max(1, chunk))]
    return torch.cat(outputs)


@torch.no_grad()
def sr_quality(
    generator: SPSRGenerator | None,
    dataset: SrCropDataset,
    sr: SpsrConfig,
    *,
    device: torch.device,
    batch_size: int = 16,
    max_crops: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Mean PSNR/SSIM (Y, border = scale) of SPSR and of bicubic ×scale on the validation crops."""
    n = len(dataset) if max_crops is None else min(len(dataset), max_crops)
    scores: dict[str, dict[str, list[float]]] = {"bicubic": {"psnr": [], "ssim": []}}
    if generator is not None:
        scores["spsr"] = {"psnr": [], "ssim": []}
        generator.eval()
    for start in tqdm(range(0, n, batch_size), desc="SR quality", disable=not progress, leave=False):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        hr = torch.stack([it["hr"] for it in items])
        lr = torch.stack([it["lr"] for it in items]).to(device)
        outputs = {"bicubic": bicubic_upsample(lr, sr.scale).cpu()}
        if generator is not None:
            outputs["spsr"] = super_resolve(generator, lr, batch_size).cpu()
        for i in range(hr.shape[0]):
            ref = to_uint8_image(hr[i].numpy())
            for name, images in outputs.items():
                img = to_uint8_image(images[i].numpy())
                value = psnr(img, ref, crop_border=sr.scale, y_channel=True)
                scores[name]["psnr"].append(min(value, 100.0))
                scores[name]["ssim"].append(ssim(img, ref, crop_border=sr.scale, y_channel=True))
    result: dict[str, Any] = {
        name: {k: float(np.mean(v)) if v else math.nan for k, v in d.items()} for name, d in scores.items()
    }
    result["num_crops"] = n
    # a records view for the report's generic extras table (``report/tables.py::json_frame``)
    result["rows"] = [
        {
            "upsampler": "SPSR" if name == "spsr" else name,
            "PSNR_Y_dB": round(d["psnr"], 3),
            "SSIM_Y": round(d["ssim"], 4),
            "crops": n,
        }
        for name, d in result.items()
        if isinstance(d, dict)
    ]
    result["protocol"] = (
        f"Y channel (BT.601), {sr.scale}-pixel border cropped, 8-bit images; LR = bicubic x1/{sr.scale} "
        "of the HR validation crop (the SR training degradation)"
    )
    return result


# --------------------------------------------------------------------------------- caching
def file_fingerprint(path: str | None) -> dict[str, Any] | None:
    """Identity of a user file (path, size, mtime) for cache keys, or None."""
    if not path:
        return None
    p = Path(path).expanduser()
    try:
        stat = p.stat()
    except OSError:
        return {"path": str(p)}
    return {"path": str(p.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cache_key(sr: SpsrConfig, profile_name: str, data_identity: dict[str, Any]) -> str:
    """Hash of everything that determines the trained generator (not the pose method)."""
    payload = {
        "format": SR_FORMAT,
        "sr": dataclasses.asdict(sr),
        "profile": profile_name,
        "data": data_identity,
        "vgg19": file_fingerprint(sr.losses.vgg19_weights),
    }
    payload["sr"].pop("sr_profile", None)
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_generator(path: Path, generator: SPSRGenerator, meta: dict[str, Any]) -> None:
    """Atomic write of ``{"format", "state_dict", "meta"}`` (plain types, ``weights_only``-loadable)."""
    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    payload = {"format": SR_FORMAT, "state_dict": state, "meta": json.loads(json.dumps(meta, default=str))}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def load_generator(path: Path, profile: SrProfileConfig, sr: SpsrConfig) -> tuple[SPSRGenerator, dict[str, Any]]:
    """Load a cached generator with ``torch.load(weights_only=True)``; foreign files raise."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path}: cannot read the cached SR checkpoint ({type(error).__name__}); delete it to retrain"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != SR_FORMAT:
        raise CheckpointError(f"{path}: not an lrpose-bench SPSR checkpoint; delete it to retrain")
    generator = build_generator(profile.nf, profile.nb, profile.gc, sr.scale, profile.taps, profile.bicubic_skip)
    try:
        generator.load_state_dict(payload["state_dict"])
    except RuntimeError:
        raise CheckpointError(
            f"{path}: generator size differs from configs/methods/spsr.yaml; delete it to retrain"
        ) from None
    generator.eval()
    return generator, dict(payload.get("meta") or {})


def write_quality(paths: list[Path], quality: dict[str, Any]) -> None:
    for path in paths:
        write_json(path, quality)


__all__ = [
    "SpsrConfig",
    "SrLossConfig",
    "SrProfileConfig",
    "SrCropDataset",
    "SrLoss",
    "VGGFeatures",
    "cache_key",
    "count_parameters",
    "degrade",
    "denormalise",
    "renormalise",
    "load_generator",
    "save_generator",
    "sr_quality",
    "super_resolve",
    "train_generator",
    "write_quality",
]
