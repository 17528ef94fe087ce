"""Evaluation: crop → model (+ flipped) → method.decode → inverse affine → COCO results.

Also collects what the paper's Fig. 5 studies: the coarse arg-max displacements ŷ − y (Eq. 11) and
the final errors after each decoder's refinement, in heatmap pixels, for visible joints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lrpose_bench.config import BenchConfig
from lrpose_bench.data.coco import KeypointSplit
from lrpose_bench.data.dataset import ImageCache, PoseDataset
from lrpose_bench.data.degrade import run_source_transform
from lrpose_bench.data.transforms import input_to_heatmap_scale, invert_affine
from lrpose_bench.keypoints import flip_index
from lrpose_bench.method import Method
from lrpose_bench.resolution import Resolution


@dataclass
class Predictions:
    """Per-instance predictions of one evaluation pass (arrays indexed like the split's instances)."""

    image_ids: np.ndarray  # (N,)
    keypoints: np.ndarray  # (N, K, 2) image coordinates
    confidences: np.ndarray  # (N, K)
    box_scores: np.ndarray  # (N,)
    box_areas: np.ndarray  # (N,)
    coarse_hm: np.ndarray  # (N, K, 2) arg-max in heatmap px
    final_hm: np.ndarray  # (N, K, 2) decoded in heatmap px
    gt_hm: np.ndarray  # (N, K, 2) ground truth in heatmap px
    visible: np.ndarray  # (N, K)

    def displacement_arrays(self) -> dict[str, np.ndarray]:
        """Arrays stored in ``displacements.npz``: coarse/final displacements with joint identity."""
        return {
            "coarse": (self.coarse_hm - self.gt_hm).astype(np.float32),
            "final": (self.final_hm - self.gt_hm).astype(np.float32),
            "visible": self.visible.astype(bool),
            "keypoint_id": np.broadcast_to(np.arange(self.visible.shape[1]), self.visible.shape).astype(np.int16),
            "image_id": self.image_ids.astype(np.int64),
        }


def build_eval_dataset(
    split: KeypointSplit,
    method: Method,
    resolution: Resolution,
    cfg: BenchConfig,
    image_cache: ImageCache | None = None,
) -> PoseDataset:
    """The evaluation crops of ``split`` at ``resolution`` (no augmentation), one construction for
    every evaluation path (cell, ``evaluate --checkpoint``, ``evaluate --weights``), so they crop,
    pad and degrade alike: ``cfg.degrade`` draws from the run's seed (``cfg.seed``), so every seed of
    a method is scored on the same degraded images."""
    return PoseDataset(
        split,
        method,
        resolution,
        train=False,
        box_padding=cfg.data.box_padding,
        image_cache=image_cache,
        source_transform=run_source_transform(cfg, train=False),
        coordinates=cfg.data.coordinates,
        crop_resolution=method.eval_crop_resolution(),
    )


def model_outputs(
    model: nn.Module,
    method: Method,
    images: Tensor,
    flip_test: bool,
    flip_idx: Tensor,
    input_transform: Callable[[Tensor], Tensor] | None = None,
    shift_flipped: bool = False,
) -> Tensor:
    """Network outputs, averaged with the flip-test outputs mapped back (HRNet/UDP flip test).

    ``shift_flipped`` (``data.coordinates: biased``): HRNet's ``TEST.SHIFT_HEATMAP``, the mapped-back
    maps moved one pixel right (``output_flipped[:, :, :, 1:] = output_flipped[:, :, :, :-1]``),
    because in the biased system a mirrored input lands 0.75 px left on the map. UDP's unbiased
    flip needs no shift."""
    if input_transform is not None:
        images = input_transform(images)
    outputs = model(images).float()
    if flip_test:
        back = method.flip_outputs(model(images.flip(-1)).float(), flip_idx)
        if shift_flipped:
            back = torch.cat([back[..., :1], back[..., :-1]], dim=-1)
        outputs = 0.5 * (outputs + back)
    return outputs


def heatmap_to_image(
    coords_hm: np.ndarray,
    matrices: np.ndarray,
    input_size: tuple[int, int],
    heatmap_size: tuple[int, int],
    coordinates: str = "unbiased",
) -> np.ndarray:
    """Exact inverse of the crop: heatmap px → input px → image px. For ``biased`` this is HRNet's
    ``transform_preds`` (the box ↔ heatmap affine of ``get_affine_transform(c, s, 0, heatmap_size)``)."""
    scale = input_to_heatmap_scale(input_size, heatmap_size, coordinates)
    input_coords = coords_hm / scale
    out = np.empty_like(input_coords)
    for i, matrix in enumerate(matrices):
        inverse = invert_affine(matrix)
        out[i] = input_coords[i] @ inverse[:, :2].T + inverse[:, 2]
    return out


@torch.no_grad()
def predict(
    model: nn.Module,
    method: Method,
    dataset: PoseDataset,
    *,
    batch_size: int = 64,
    flip_test: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
    input_transform: Callable[[Tensor], Tensor] | None = None,
    num_workers: int = 0,
) -> Predictions:
    """Run the model over every instance of ``dataset`` (``train=False``)."""
    model.eval()
    device = torch.device(device)
    flip_idx = torch.as_tensor(flip_index(method.context.num_joints), device=device)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=device.type == "cuda"
    )
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("coords", "scores", "coarse", "matrix", "gt", "vis", "index")}
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        images = batch["image"].to(device, non_blocking=True)
        outputs = model_outputs(
            model, method, images, flip_test, flip_idx, input_transform, dataset.coordinates == "biased"
        )
        coords, scores = method.decode(outputs)
        coarse = method.coarse_argmax(outputs)
        parts["coords"].append(coords.cpu().numpy().astype(np.float64))
        parts["scores"].append(scores.cpu().numpy().astype(np.float64))
        parts["coarse"].append(coarse.cpu().numpy().astype(np.float64))
        parts["matrix"].append(batch["matrix"].numpy())
        parts["gt"].append(batch["joints"].numpy().astype(np.float64))
        parts["vis"].append(batch["visible"].numpy())
        parts["index"].append(batch["index"].numpy())
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    resolution = dataset.resolution
    keypoints = heatmap_to_image(cat["coords"], cat["matrix"], resolution.size, resolution.heatmap, dataset.coordinates)
    instances = [dataset.split.instances[i] for i in cat["index"]]
    return Predictions(
        image_ids=np.array([inst.image_id for inst in instances]),
        keypoints=keypoints,
        confidences=cat["scores"],
        box_scores=np.array([inst.score for inst in instances]),
        box_areas=dataset.nms_box_areas()[cat["index"]],
        coarse_hm=cat["coarse"],
        final_hm=cat["coords"],
        gt_hm=cat["gt"],
        visible=cat["vis"],
    )
