"""Source-image degradations: named, versioned low-resolution protocols.

The paper models "low resolution" only as a small network input: the crop is resized to 64×48.
Real low-resolution imagery is also blurred, noisy and compressed. A *preset* (``configs/degrade.yaml``)
describes such a degradation; the engine applies it to the **source image** before the person crop
is resized to the network input (``PoseDataset(..., source_transform=f)`` calls ``f(image, index)``).

The model, in the order of the classical first-order degradation of Real-ESRGAN/BSRGAN
(XPixelGroup/BasicSR ``realesrgan_model.py``: blur → resize → noise → JPEG)::

    y = up( JPEG_q( down_k(x ⊛ G_σ) + n ) ),   n ~ N(0, s²) per pixel and channel

* ``G_σ``: Gaussian blur (OpenCV ``GaussianBlur``, reflect-101 border), σ in source pixels.
* ``down_k``: reduction of the whole image by the factor ``k`` with an antialiasing kernel:
  ``bicubic`` (Pillow: Keys a=-0.5 widened by ``k``, as MATLAB's ``imresize``), ``bilinear``
  (Pillow: the widened triangle) or ``area`` (OpenCV ``INTER_AREA``: exact area averaging, also for
  non-integer ``k``; Pillow's ``BOX`` point-samples a half-open box and shifts the frame by up to
  k/6 px for non-integer ``k``, so it is not used).
* ``n``, ``JPEG_q``: sensor noise (s in 8-bit grey levels) and JPEG compression (Pillow, quality q,
  its default 4:2:0 chroma subsampling) happen on the reduced image, as in a low-resolution camera.
* ``up``: back to the source size (Pillow ``bilinear`` or ``bicubic``).

Why the whole image and why down *then up*: the hook receives the full source image (H, W, 3 uint8
RGB) and must return an image in the same coordinate frame, because the crop's affine matrix (and
the exact back-projection of predictions) is computed from the annotation's box in source pixels.
Blur, noise and JPEG are local operations, so degrading the whole image equals degrading the person
region (up to an 8×8 JPEG block alignment and the border handling of the blur, which only touch the
image edge). Downsampling by ``k`` followed by upsampling to the exact source size keeps the frame:
Pillow and OpenCV map image extents to extents (pixel centres at ``i + 0.5``), so a point at source
coordinate ``u`` stays at ``u``; the person only loses the detail above the new Nyquist frequency
``1/(2k)`` cycles per source pixel. ``k`` is relative to the *source* image, not to the person: a person 160 px
tall degraded by ``k = 4`` carries the information of a 40 px person.

Randomness: every draw comes from a generator seeded by the run seed and the instance index
(evaluation: ``(seed, index)``, so the same instance always receives the same degradation, in any
order and with any number of loader workers; training: ``(seed, epoch, index)`` so that each epoch
sees a fresh degradation). The streams carry a salt so they never coincide with the dataset's own
augmentation generator ``(seed, epoch, index)``.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from lrpose_bench.config import config_dir, read_yaml
from lrpose_bench.errors import ConfigError

#: salt of the degradation streams (distinct from the augmentation generator's entropy)
_STREAM_SALT = 0xDE6
_EVAL_STREAM, _TRAIN_STREAM = 0, 1

#: reduction kernels by the names the YAML uses (Pillow filters; ``area`` is OpenCV's INTER_AREA)
DOWN_KERNELS = {
    "bicubic": Image.Resampling.BICUBIC,
    "area": None,
    "bilinear": Image.Resampling.BILINEAR,
}
#: enlargement kernels (Pillow filters)
UP_KERNELS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

#: Pillow's JPEG quality scale; above 95 Pillow's docs advise against (no gain, large files)
JPEG_QUALITY_RANGE = (1, 95)


# ------------------------------------------------------------------------------ operations
def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3)):
        raise ValueError(f"expected an (H, W[, 3]) uint8 image, got {image.dtype} {image.shape}")


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur (OpenCV; kernel size derived from σ by OpenCV, reflect-101 border)."""
    _check_image(image)
    if sigma <= 0:
        return image.copy()
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT_101)


def reduced_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """(h, w) of an image reduced by ``factor`` (rounded, at least 1 pixel)."""
    return max(1, int(round(height / factor))), max(1, int(round(width / factor)))


def resize(image: np.ndarray, size: tuple[int, int], kernel: str) -> np.ndarray:
    """Resize to ``size`` = (height, width), antialiased when reducing. ``bicubic``/``bilinear``:
    Pillow (kernel widened by the reduction factor); ``area``: OpenCV ``INTER_AREA`` (reduction only).
    Both libraries map image extents to extents, so the coordinate frame is kept."""
    _check_image(image)
    filters = {**DOWN_KERNELS, **UP_KERNELS}
    if kernel not in filters:
        raise ValueError(f"unknown resampling kernel {kernel!r}; known: {', '.join(sorted(filters))}")
    squeeze = image.ndim == 3 and image.shape[2] == 1
    plane = image[..., 0] if squeeze else image
    if kernel == "area":
        if size[0] > image.shape[0] or size[1] > image.shape[1]:
            raise ValueError("the area kernel only reduces; enlarge with bilinear or bicubic")
        out = cv2.resize(plane, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    else:
        out = np.asarray(Image.fromarray(plane).resize((size[1], size[0]), resample=filters[kernel]))
    return out[..., None] if squeeze else out


def down_up(image: np.ndarray, factor: float, kernel: str = "bicubic", upsample: str = "bilinear") -> np.ndarray:
    """Reduce by ``factor`` and resize back to the source size (frame unchanged, detail lost)."""
    if factor <= 1.0:
        return image.copy()
    height, width = image.shape[:2]
    return resize(resize(image, reduced_size(height, width, factor), kernel), (height, width), upsample)


def add_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian sensor noise (σ in grey levels, per pixel and channel), rounded and clipped."""
    _check_image(image)
    if sigma <= 0:
        return image.copy()
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(np.rint(image.astype(np.float32) + noise), 0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    """The JPEG file Pillow writes for ``image`` at ``quality`` (Pillow's default subsampling)."""
    _check_image(image)
    squeeze = image.ndim == 3 and image.shape[2] == 1
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if squeeze else image).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG encode/decode round trip through Pillow."""
    decoded = np.asarray(Image.open(io.BytesIO(jpeg_bytes(image, quality))))
    return decoded[..., None] if image.ndim == 3 and image.shape[2] == 1 else decoded


# -------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Span:
    """A closed sampling range ``[low, high]`` (``low == high``: a fixed value)."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(self.low + (self.high - self.low) * rng.random())

    def sample_int(self, rng: np.random.Generator) -> int:
        return int(rng.integers(int(self.low), int(self.high), endpoint=True))

    def as_list(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class BlurStep:
    p: float
    sigma: Span


@dataclass(frozen=True)
class DownsampleStep:
    p: float
    factor: Span
    kernels: tuple[str, ...]
    upsample: str


@dataclass(frozen=True)
class NoiseStep:
    p: float
    sigma: Span


@dataclass(frozen=True)
class JpegStep:
    p: float
    quality: Span


@dataclass(frozen=True)
class DegradationParams:
    """One concrete draw of a preset (``None``: the step is skipped)."""

    blur_sigma: float | None = None
    factor: float | None = None
    kernel: str | None = None
    upsample: str = "bilinear"
    noise_sigma: float | None = None
    jpeg_quality: int | None = None


@dataclass(frozen=True)
class Preset:
    """A named, versioned degradation protocol (one entry of ``configs/degrade.yaml``)."""

    name: str
    version: int
    description: str
    train: bool
    eval: bool
    blur: BlurStep | None = None
    downsample: DownsampleStep | None = None
    noise: NoiseStep | None = None
    jpeg: JpegStep | None = None
    extends: str | None = None

    @property
    def label(self) -> str:
        """How tables cite the preset: ``lr-severe v1``."""
        return f"{self.name} v{self.version}"

    @property
    def is_identity(self) -> bool:
        return all(step is None or step.p <= 0 for step in (self.blur, self.downsample, self.noise, self.jpeg))

    def applies(self, train: bool) -> bool:
        """Whether the preset degrades images in this phase."""
        return (self.train if train else self.eval) and not self.is_identity

    def sample(self, rng: np.random.Generator) -> DegradationParams:
        """Draw concrete parameters. Every step consumes the same draws whether or not it fires, so
        changing one step's probability does not reshuffle the others."""
        values: dict[str, Any] = {}
        if self.blur is not None:
            fire, sigma = rng.random() < self.blur.p, self.blur.sigma.sample(rng)
            values["blur_sigma"] = sigma if fire else None
        if self.downsample is not None:
            step = self.downsample
            fire, factor = rng.random() < step.p, step.factor.sample(rng)
            kernel = step.kernels[int(rng.integers(len(step.kernels)))]
            if fire:
                values.update(factor=factor, kernel=kernel, upsample=step.upsample)
        if self.noise is not None:
            fire, sigma = rng.random() < self.noise.p, self.noise.sigma.sample(rng)
            values["noise_sigma"] = sigma if fire else None
        if self.jpeg is not None:
            fire, quality = rng.random() < self.jpeg.p, self.jpeg.quality.sample_int(rng)
            values["jpeg_quality"] = quality if fire else None
        return DegradationParams(**values)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrade one image with parameters (and noise) drawn from ``rng``."""
        return apply_params(image, self.sample(rng), rng)

    def describe(self) -> dict[str, Any]:
        """Plain dict for reports and resolved configs."""
        steps: dict[str, Any] = {}
        if self.blur is not None:
            steps["blur"] = {"p": self.blur.p, "sigma": self.blur.sigma.as_list()}
        if self.downsample is not None:
            steps["downsample"] = {
                "p": self.downsample.p,
                "factor": self.downsample.factor.as_list(),
                "kernel": list(self.downsample.kernels),
                "upsample": self.downsample.upsample,
            }
        if self.noise is not None:
            steps["noise"] = {"p": self.noise.p, "sigma": self.noise.sigma.as_list()}
        if self.jpeg is not None:
            steps["jpeg"] = {"p": self.jpeg.p, "quality": [int(v) for v in self.jpeg.quality.as_list()]}
        return {
            "name": self.name,
            "version": self.version,
            "label": self.label,
            "description": self.description,
            "train": self.train,
            "eval": self.eval,
            "steps": steps,
            "order": "blur -> downsample -> noise -> jpeg -> upsample",
        }


def apply_params(image: np.ndarray, params: DegradationParams, rng: np.random.Generator) -> np.ndarray:
    """Apply one concrete draw: blur at source resolution; noise and JPEG on the reduced image."""
    _check_image(image)
    height, width = image.shape[:2]
    out = image
    if params.blur_sigma is not None:
        out = gaussian_blur(out, params.blur_sigma)
    reduced = params.factor is not None and params.factor > 1.0
    if reduced:
        out = resize(out, reduced_size(height, width, params.factor), params.kernel or "bicubic")
    if params.noise_sigma is not None:
        out = add_gaussian_noise(out, params.noise_sigma, rng)
    if params.jpeg_quality is not None:
        out = jpeg_compress(out, params.jpeg_quality)
    if reduced:
        out = resize(out, (height, width), params.upsample)
    return out.copy() if out is image else out


# ---------------------------------------------------------------------------- YAML loading
_PRESET_KEYS = {"version", "description", "train", "eval", "extends", "blur", "downsample", "noise", "jpeg"}
_STEP_KEYS = {
    "blur": {"p", "sigma"},
    "downsample": {"p", "factor", "kernel", "upsample"},
    "noise": {"p", "sigma"},
    "jpeg": {"p", "quality"},
}


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _span(value: Any, where: str, minimum: float, maximum: float = float("inf"), integer: bool = False) -> Span:
    items = value if isinstance(value, (list, tuple)) else [value, value]
    if len(items) != 2:
        raise ConfigError(f"{where}: expected [low, high] or one number, got {value!r}")
    low, high = (_number(v, where) for v in items)
    if integer and (low != int(low) or high != int(high)):
        raise ConfigError(f"{where}: expected integers, got {value!r}")
    if not (minimum <= low <= high <= maximum):
        raise ConfigError(f"{where}: need {minimum:g} <= low <= high <= {maximum:g}, got {value!r}")
    return Span(low, high)


def _probability(step: Mapping[str, Any], where: str) -> float:
    p = _number(step.get("p", 1.0), f"{where}.p")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"{where}.p: a probability in [0, 1], got {p!r}")
    return p


def _step(kind: str, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(sorted(_STEP_KEYS[kind]))}")
    unknown = set(data) - _STEP_KEYS[kind]
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {', '.join(sorted(_STEP_KEYS[kind]))}")
    for key in _STEP_KEYS[kind] - {"p", "upsample", "kernel"}:
        if key not in data:
            raise ConfigError(f"{where}: missing key {key!r}")
    p = _probability(data, where)
    if kind == "blur":
        return BlurStep(p, _span(data["sigma"], f"{where}.sigma", 0.0))
    if kind == "noise":
        return NoiseStep(p, _span(data["sigma"], f"{where}.sigma", 0.0, 255.0))
    if kind == "jpeg":
        return JpegStep(p, _span(data["quality"], f"{where}.quality", *JPEG_QUALITY_RANGE, integer=True))
    kernels = data.get("kernel", "bicubic")
    kernels = tuple(kernels) if isinstance(kernels, (list, tuple)) else (kernels,)
    if not kernels or any(k not in DOWN_KERNELS for k in kernels):
        raise ConfigError(f"{where}.kernel: choose from {', '.join(DOWN_KERNELS)}, got {data.get('kernel')!r}")
    upsample = data.get("upsample", "bilinear")
    if upsample not in UP_KERNELS:
        raise ConfigError(f"{where}.upsample: choose from {', '.join(UP_KERNELS)}, got {upsample!r}")
    return DownsampleStep(p, _span(data["factor"], f"{where}.factor", 1.0), kernels, upsample)


def _resolve(name: str, raw: Mapping[str, Any], path: Path, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The preset's keys with ``extends`` applied (version and extends themselves not inherited)."""
    entry = raw[name]
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{path}: preset {name!r} must be a mapping of keys")
    parent = entry.get("extends")
    if parent is None:
        return dict(entry)
    if parent not in raw:
        raise ConfigError(f"{path}: preset {name!r} extends unknown preset {parent!r}; known: {', '.join(raw)}")
    if parent in chain + (name,):
        raise ConfigError(f"{path}: preset {name!r}: circular 'extends' through {parent!r}")
    base = {k: v for k, v in _resolve(parent, raw, path, chain + (name,)).items() if k not in ("version", "extends")}
    return {**base, **entry}


def parse_presets(data: Mapping[str, Any], path: Path) -> dict[str, Preset]:
    """Validate the YAML mapping ``{presets: {name: {...}}}``; errors name the file and the key."""
    unknown = set(data) - {"presets"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown)}; put presets under 'presets:'")
    raw = data.get("presets")
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{path}: 'presets' must be a non-empty mapping of preset names")
    presets: dict[str, Preset] = {}
    for name in raw:
        where = f"{path}: presets.{name}"
        entry = _resolve(name, raw, path)
        unknown = set(entry) - _PRESET_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {', '.join(sorted(_PRESET_KEYS))}")
        version = entry.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigError(f"{where}.version: an integer >= 1 is required (tables cite it), got {version!r}")
        phases = {}
        for phase in ("train", "eval"):
            value = entry.get(phase)
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{phase}: expected true or false, got {value!r}")
            phases[phase] = value
        steps = {
            kind: _step(kind, entry[kind], f"{where}.{kind}") for kind in _STEP_KEYS if entry.get(kind) is not None
        }
        preset = Preset(
            name=str(name),
            version=version,
            description=str(entry.get("description", "")),
            extends=raw[name].get("extends"),
            **phases,
            **steps,
        )
        if name == "clean" and not preset.is_identity:
            raise ConfigError(f"{where}: the 'clean' preset must not degrade anything (it is the paper's protocol)")
        presets[str(name)] = preset
    if "clean" not in presets:
        raise ConfigError(f"{path}: a 'clean' preset is required (the default protocol)")
    return presets


def load_presets(path: Path | None = None) -> dict[str, Preset]:
    """Presets of ``configs/degrade.yaml`` (or of ``path``)."""
    path = Path(path) if path is not None else config_dir() / "degrade.yaml"
    return parse_presets(read_yaml(path), path)


#: the named presets of ``configs/degrade.yaml``
PRESETS: dict[str, Preset] = load_presets()


def get_preset(name: str) -> Preset:
    """The preset called ``name``; :class:`ConfigError` naming the known presets otherwise."""
    preset = PRESETS.get(name)
    if preset is None:
        raise ConfigError(
            f"unknown degradation preset {name!r} (--degrade / config key 'degrade'); "
            f"known presets: {', '.join(PRESETS)} (configs/degrade.yaml)"
        )
    return preset


def describe_preset(name: str) -> dict[str, Any]:
    """Name, version, citation label, phases and parameter ranges of a preset (for reports)."""
    return get_preset(name).describe()


# ---------------------------------------------------------------------------- dataset hook
@dataclass
class SourceTransform:
    """``f(image, index, epoch=None) -> image``: the dataset hook degrading one source image.

    Evaluation draws from ``(seed, index)``. Training draws from ``(seed, epoch, index)`` when the
    dataset passes ``epoch``; without it, a per-index call counter stands in for the epoch, which is
    reproducible in one process with ``num_workers=0`` but not across resumes or loader workers.
    """

    preset: Preset
    train: bool
    seed: int
    _calls: dict[int, int] = field(default_factory=lambda: defaultdict(int), repr=False)

    def generator(self, index: int, epoch: int | None = None) -> np.random.Generator:
        if not self.train:
            return np.random.default_rng([self.seed, _STREAM_SALT, _EVAL_STREAM, int(index)])
        if epoch is None:
            epoch = self._calls[int(index)]
            self._calls[int(index)] += 1
        return np.random.default_rng([self.seed, _STREAM_SALT, _TRAIN_STREAM, int(epoch), int(index)])

    def params(self, index: int, epoch: int | None = None) -> DegradationParams:
        """The parameters instance ``index`` receives (evaluation; for logs and tests)."""
        return self.preset.sample(self.generator(index, epoch))

    def __call__(self, image: np.ndarray, index: int, epoch: int | None = None) -> np.ndarray:
        return self.preset(image, self.generator(index, epoch))


def source_transform(name: str, train: bool, seed: int) -> SourceTransform | None:
    """The degradation hook for one phase, or ``None`` when the preset leaves that phase clean."""
    preset = get_preset(name)
    if not preset.applies(train):
        return None
    return SourceTransform(preset, bool(train), int(seed))


def run_source_transform(cfg: Any, train: bool, seed: int | None = None) -> SourceTransform | None:
    """The run's degradation hook (``cfg.degrade``) for one phase; ``None`` for ``clean``.

    Training draws from the cell's ``seed``; evaluation from the run's (``cfg.seed``, the default),
    so every seed of a method — and SR+pose's SR stage — is scored on the same degraded images."""
    if getattr(cfg, "degrade", "clean") == "clean":
        return None
    return source_transform(cfg.degrade, train=train, seed=cfg.seed if seed is None else seed)


__all__ = [
    "PRESETS",
    "run_source_transform",
    "Preset",
    "DegradationParams",
    "SourceTransform",
    "source_transform",
    "describe_preset",
    "get_preset",
    "load_presets",
    "parse_presets",
    "apply_params",
    "gaussian_blur",
    "resize",
    "down_up",
    "reduced_size",
    "add_gaussian_noise",
    "jpeg_bytes",
    "jpeg_compress",
    "DOWN_KERNELS",
    "UP_KERNELS",
]
