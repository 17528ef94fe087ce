"""Cached, memory-mapped instance crops: decode every training instance once.

Why: decoding a JPEG costs ~430 img/s per core, an affine warp to 64×48 ~100k/s, a batched
``grid_sample`` of uint8 crops on a GPU ~2.5M/s. At low resolution a training step is faster than
decoding its images, so the fast path decodes each instance *once* into a fixed-size uint8 crop
("store crop") and then applies the random affine per batch on the training device
(:mod:`lrpose_bench.data.gpu_augment`).

Geometry (same unbiased convention as :mod:`lrpose_bench.data.transforms`, UDP-Pose
``get_warpmatrix``): the store crop of an instance is an axis-aligned crop centred on the padded
person box, i.e. ``crop_matrix(CropParams(center, store_box), store_size)``. It must contain every
augmented crop the training can ask for: the box scaled by up to ``1 + sf`` and rotated by up to
``2·rf`` degrees (``sample_augmentation`` clips to these), so its extent per axis is
``(1 + sf) · max_θ (bw·|cos θ| + bh·|sin θ|)`` (the bounding box of the rotated, scaled box; the
maximum is the diagonal once ``θ`` passes ``atan(bh/bw)``), plus a margin of a few store pixels
so bilinear taps at the border never read the zero padding.

Resolution: the store is tied to the *largest* input size of the run: ``oversample = 1`` samples
the store with the density of the un-augmented crop at that size, so zoom-in augmentation
(scale < 1) re-samples it by up to ``1/(1 - sf)``. All crops have one size (boxes are
aspect-fixed to the input aspect before padding), so a batch of them is one tensor.

The store is a folder ``cropstore-<digest>/`` with ``crops.npy`` (N, Sh, Sw, 3) uint8 opened with
``mmap_mode="r"`` and ``meta.npz`` (centres, box sizes, store matrices, joints, visibility). It is
built into a temporary folder and renamed, so a killed build never leaves a half store behind, and
the digest covers the instances and every geometric setting, so a changed data set or augmentation
range builds a new store instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lrpose_bench.config import AugmentConfig, CropStoreConfig
from lrpose_bench.data.coco import KeypointSplit
from lrpose_bench.data.transforms import CropParams, box_to_center_size, crop_matrix, warp_image
from lrpose_bench.errors import DataError
from lrpose_bench.resolution import Resolution

#: bump when the layout or geometry of stored crops changes (invalidates old stores)
STORE_VERSION = 1


@dataclass(frozen=True)
class StoreGeometry:
    """Size of every store crop and its box relative to the padded person box."""

    size: tuple[int, int]  # (Sh, Sw) store crop pixels
    box_factor: tuple[float, float]  # store box (w, h) = padded box (w, h) * factor
    aspect: float  # input aspect w/h the padded boxes were fixed to
    max_scale: float
    max_rotation: float  # degrees

    def store_box(self, padded_size: tuple[float, float]) -> tuple[float, float]:
        return padded_size[0] * self.box_factor[0], padded_size[1] * self.box_factor[1]


def rotated_extent(width: float, height: float, max_degrees: float) -> tuple[float, float]:
    """Largest axis-aligned extent (x, y) of a ``width × height`` box rotated by any |θ| ≤ max_degrees.

    ``w|cos θ| + h|sin θ|`` increases up to ``θ* = atan2(h, w)`` where it equals the diagonal, and
    never exceeds the diagonal (likewise for y with ``atan2(w, h)``).
    """
    theta = math.radians(min(abs(max_degrees), 180.0))
    diag = math.hypot(width, height)

    def extent(a: float, b: float) -> float:
        if theta >= math.atan2(b, a):
            return diag
        return a * abs(math.cos(theta)) + b * abs(math.sin(theta))

    return extent(width, height), extent(height, width)


def store_geometry(
    resolutions: Sequence[Resolution], augment: AugmentConfig, oversample: float = 1.0, margin_px: int = 2
) -> StoreGeometry:
    """Fixed store crop size for the run's resolutions (one aspect) and augmentation range."""
    if not resolutions:
        raise DataError("crop store: no input resolution given")
    aspects = {round(r.width / r.height, 9) for r in resolutions}
    if len(aspects) != 1:
        raise DataError(
            f"crop store: resolutions {', '.join(map(str, resolutions))} have different aspect ratios; "
            "build one store per aspect (the padded person box depends on it)"
        )
    if not oversample > 0:
        raise DataError(f"crop store: oversample must be > 0, got {oversample!r}")
    largest = max(resolutions, key=lambda r: r.height * r.width)
    aspect = largest.width / largest.height
    max_scale = 1.0 + max(0.0, augment.scale_factor)  # sample_augmentation clips to [1-sf, 1+sf]
    max_rotation = 2.0 * abs(augment.rotation_factor) if augment.rotation_prob > 0 else 0.0
    # in units of the padded box height bh (bw = aspect·bh)
    ext_x, ext_y = rotated_extent(aspect, 1.0, max_rotation)
    ext_x, ext_y = ext_x * max_scale, ext_y * max_scale
    density = oversample * max(largest.height - 1.0, (largest.width - 1.0) / aspect)  # store px per bh
    span_w = math.ceil(density * ext_x) + 2 * margin_px  # = Sw - 1
    span_h = math.ceil(density * ext_y) + 2 * margin_px
    # isotropic store: the store box is span / density box heights (covers ext plus the margin)
    factor = ((span_w / density) / aspect, span_h / density)
    return StoreGeometry((span_h + 1, span_w + 1), factor, aspect, max_scale, max_rotation)


def _instances_digest(split: KeypointSplit) -> str:
    digest = hashlib.sha256()
    digest.update(str(Path(split.annotation_file).resolve()).encode())
    for inst in split.instances:
        digest.update(str(inst.image_path).encode())
        digest.update(np.asarray(inst.bbox, dtype=np.float64).tobytes())
        digest.update(np.asarray(inst.joints, dtype=np.float64).tobytes())
        digest.update(np.asarray(inst.visibility, dtype=np.float64).tobytes())
    return digest.hexdigest()


def store_key(split: KeypointSplit, geometry: StoreGeometry, box_padding: float) -> str:
    """Digest naming a store: instances + geometry + padding + layout version."""
    payload = json.dumps(
        {
            "v": STORE_VERSION,
            "instances": _instances_digest(split),
            "geometry": asdict(geometry),
            "padding": box_padding,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class CropStore:
    """A built store: memory-mapped uint8 crops and the per-instance geometry (read-only)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.info = json.loads((self.path / "store.json").read_text())
            meta = np.load(self.path / "meta.npz")
            self.crops = np.load(self.path / "crops.npy", mmap_mode="r")
        except (OSError, ValueError, KeyError) as error:
            raise DataError(
                f"crop store {self.path} is unreadable ({error}); delete the folder to rebuild it"
            ) from None
        self.centers = meta["centers"]  # (N, 2) padded box centre, image px
        self.box_sizes = meta["box_sizes"]  # (N, 2) padded box (w, h), image px
        self.store_matrices = meta["store_matrices"]  # (N, 2, 3) image -> store crop
        self.joints = meta["joints"]  # (N, K, 2) image px
        self.visibility = meta["visibility"]  # (N, K) COCO flags
        self.geometry = StoreGeometry(
            tuple(self.info["size"]),
            tuple(self.info["box_factor"]),
            self.info["aspect"],
            self.info["max_scale"],
            self.info["max_rotation"],
        )
        self.box_padding = float(self.info["box_padding"])
        if self.crops.shape[0] != self.centers.shape[0] or tuple(self.crops.shape[1:3]) != self.geometry.size:
            raise DataError(f"crop store {self.path} is inconsistent (crops {self.crops.shape}); delete it to rebuild")
        self._device_cache: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return int(self.crops.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(Sh, Sw) of every store crop."""
        return self.geometry.size

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.crops.shape))

    def covers(self, resolution: Resolution, augment: AugmentConfig, box_padding: float) -> bool:
        """Whether augmented crops at ``resolution`` stay inside the store crops (same box, range)."""
        max_rotation = 2.0 * abs(augment.rotation_factor) if augment.rotation_prob > 0 else 0.0
        return (
            abs(resolution.width / resolution.height - self.geometry.aspect) < 1e-9
            and abs(box_padding - self.box_padding) < 1e-12
            and 1.0 + augment.scale_factor <= self.geometry.max_scale + 1e-12
            and max_rotation <= self.geometry.max_rotation + 1e-12
        )

    def gather(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Crops of ``indices`` copied out of the memory map: (B, Sh, Sw, 3) uint8."""
        return np.ascontiguousarray(self.crops[np.asarray(indices, dtype=np.int64)])

    def on_device(self, device: torch.device | str) -> torch.Tensor:
        """The whole store as one (N, Sh, Sw, 3) uint8 tensor on ``device`` (loaded once, kept)."""
        key = str(torch.device(device))
        tensor = self._device_cache.get(key)
        if tensor is None:
            tensor = torch.from_numpy(np.array(self.crops)).to(device)  # a writable RAM copy of the map
            self._device_cache[key] = tensor
        return tensor


def _build_into(
    folder: Path,
    split: KeypointSplit,
    geometry: StoreGeometry,
    box_padding: float,
    read_image: Callable[[Path], np.ndarray],
    workers: int,
    progress: bool,
) -> None:
    n = len(split.instances)
    sh, sw = geometry.size
    centers = np.zeros((n, 2), np.float64)
    box_sizes = np.zeros((n, 2), np.float64)
    matrices = np.zeros((n, 2, 3), np.float64)
    for i, inst in enumerate(split.instances):
        center, size = box_to_center_size(inst.bbox, geometry.aspect, box_padding)
        centers[i], box_sizes[i] = center, size
        matrices[i] = crop_matrix(CropParams(center, geometry.store_box(size)), (sh, sw))
    crops = np.lib.format.open_memmap(folder / "crops.npy", mode="w+", dtype=np.uint8, shape=(n, sh, sw, 3))

    def one(i: int) -> None:
        crops[i] = warp_image(read_image(split.instances[i].image_path), matrices[i], (sh, sw))

    order = sorted(range(n), key=lambda i: str(split.instances[i].image_path))  # decode each image while cached
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, order, chunksize=16))
    else:
        for i in order:
            one(i)
    crops.flush()
    np.savez(
        folder / "meta.npz",
        centers=centers,
        box_sizes=box_sizes,
        store_matrices=matrices,
        joints=np.stack([np.asarray(inst.joints, np.float64) for inst in split.instances]),
        visibility=np.stack([np.asarray(inst.visibility, np.float64) for inst in split.instances]),
    )
    info = {
        "version": STORE_VERSION,
        "split": split.name,
        "instances": n,
        "size": [sh, sw],
        "box_factor": list(geometry.box_factor),
        "aspect": geometry.aspect,
        "max_scale": geometry.max_scale,
        "max_rotation": geometry.max_rotation,
        "box_padding": box_padding,
    }
    (folder / "store.json").write_text(json.dumps(info, indent=1))


def build_crop_store(
    split: KeypointSplit,
    resolutions: Sequence[Resolution],
    augment: AugmentConfig,
    box_padding: float,
    root: Path | str,
    *,
    config: CropStoreConfig | None = None,
    read_image: Callable[[Path], np.ndarray] | None = None,
    progress: bool = False,
) -> CropStore:
    """Open the store for (split, resolutions, augmentation range), building it first if needed.

    ``read_image(path)`` returns an RGB uint8 image (default: a fresh
    :class:`~lrpose_bench.data.dataset.ImageCache`, so each image is decoded once). Train-time
    source degradations (``--degrade``) draw per epoch and cannot be cached: the fast path is for
    ``degrade: clean``.
    """
    cfg = config or CropStoreConfig()
    geometry = store_geometry(resolutions, augment, cfg.oversample, cfg.margin_px)
    root = Path(root).expanduser()
    folder = root / f"cropstore-{store_key(split, geometry, box_padding)}"
    if (folder / "store.json").is_file():
        return CropStore(folder)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    except OSError as error:
        raise DataError(
            f"crop store folder {root} is not writable ({error.strerror}); set data.crop_store.root"
        ) from None
    if read_image is None:
        from lrpose_bench.data.dataset import ImageCache

        read_image = ImageCache().read
    started = time.perf_counter()
    try:
        _build_into(tmp, split, geometry, box_padding, read_image, max(1, cfg.workers), progress)
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "store.json").is_file():  # another process finished first: use its store
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    store = CropStore(folder)
    store.build_seconds = time.perf_counter() - started  # type: ignore[attr-defined]
    return store
