"""The Method protocol: everything that differs between HRNet/SimpleBaseline, DARK, UDP, SPSR+pose
and CAL lives behind this interface, so the engine never branches on a method's name.

Coordinate conventions (shared by every method; see ``lrpose_bench.data.transforms``):

* all methods use UDP's unbiased data processing: pixel centres sit on integer coordinates and an
  image of width ``w`` spans ``[0, w-1]``; input and heatmap are related by the factor
  ``(W_hm - 1) / (w_in - 1)``, so a horizontal flip is exactly ``x -> W_hm - 1 - x`` on the heatmap
  and no flip-test pixel shift is needed;
* ``encode`` receives joints already in **heatmap** coordinates; ``decode`` returns heatmap
  coordinates; the evaluator maps them back to the image with the exact inverse affine.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from lrpose_bench.resolution import Resolution


@dataclass(frozen=True)
class TrainingStage:
    """One training stage: CAL has two (Eq. 14 for 210 epochs, then Eq. 15 for 40)."""

    name: str
    epochs: int
    index: int = 0


@dataclass(frozen=True)
class MethodContext:
    """What a method is built for: one benchmark cell's resolution and joint set."""

    resolution: Resolution
    num_joints: int = 17

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(H, W) of the heatmap."""
        return self.resolution.heatmap

    @property
    def input_size(self) -> tuple[int, int]:
        """(h, w) of the network input."""
        return self.resolution.size


class Method(abc.ABC):
    """Base class of every benchmark method.

    Subclasses set the class attributes and a ``Params`` dataclass holding their configurable
    constants (σ, radius, α, ...). Constants come from ``configs/methods/<name>.yaml`` resolved for
    the cell's resolution (see :mod:`lrpose_bench.config`), never from code.
    """

    #: registry name, e.g. "cal"
    name: ClassVar[str] = ""
    #: one-line description shown by ``lrpose-bench methods``
    description: ClassVar[str] = ""
    #: short names of the codec and loss, for tables and ``lrpose-bench methods``
    codec_name: ClassVar[str] = ""
    #: the loss in one line, as the catalogue and reports show it; a method whose loss depends on its
    #: constants overrides the :attr:`loss_name` property instead (CAL's ℓ, UDP's loss switch)
    loss_family: ClassVar[str] = ""
    #: dataclass type holding the method's constants
    Params: ClassVar[type] = type("NoParams", (), {})
    #: the codec's stated round-trip bound in heatmap px per axis, away from borders (``None``:
    #: none stated); the codec-oracle tests hold every method to it (``tests/test_oracle.py``)
    codec_bound_px: float | None = None
    #: the outputs are (N, C, H, W) maps over the heatmap grid (heatmaps, offset fields). HRNet's
    #: biased flip test shifts such maps one pixel (``data.coordinates: biased``); a method whose
    #: outputs are vectors (SimCC, RLE) sets ``False`` and runs in the unbiased system only
    outputs_are_maps: bool = True

    def __init__(self, params: Any, context: MethodContext) -> None:
        self.params = params
        self.context = context

    @property
    def loss_name(self) -> str:
        """The loss this instance trains with (``metrics.json``, reports): :attr:`loss_family`
        unless the method refines it from its constants. Read-only: it follows the constants."""
        return self.loss_family

    # ----------------------------------------------------------------------------------- head
    @abc.abstractmethod
    def head_channels(self) -> int:
        """Number of output channels of the network head: K (heatmaps) or 3K (heatmap + offsets)."""

    def build_head(self) -> torch.nn.Module | None:
        """Optional output head after the backbone; ``None`` (the default) keeps the model
        the plain backbone, whose 1x1 ``final_layer`` already outputs ``head_channels()`` maps.

        A method whose network output is not a stack of heatmap-resolution maps returns a module
        that maps the backbone's (N, ``head_channels()``, H/4, W/4) output to the method's output
        tensor: SimCC's flatten + linear 1-D classifiers, RLE's global-average-pool + linear
        regressor. :func:`lrpose_bench.models.build_method_model` composes the two (state-dict
        prefixes ``backbone.`` / ``head.``); the head's parameters are trained with the backbone
        and saved in the cell's checkpoint. Outputs must stay one tensor (the flip test averages
        ``model(x)`` with ``flip_outputs(model(flip(x)))``).
        """
        return None

    # --------------------------------------------------------------------------------- encode
    @abc.abstractmethod
    def encode(self, joints: np.ndarray, visible: np.ndarray) -> dict[str, np.ndarray]:
        """Training targets for one instance.

        Args:
            joints: (K, 2) float array of joint (x, y) in heatmap coordinates.
            visible: (K,) float array, 1 where the joint is labelled and inside the crop, else 0.
        Returns:
            arrays (float32) that the default collate stacks into a batch; the loss receives them.
        """

    def encode_batch(self, joints: Tensor, visible: Tensor) -> dict[str, Tensor]:
        """Training targets for a whole batch, on the joints' device (the fast input path).

        Args:
            joints: (B, K, 2) float tensor of joint (x, y) in heatmap coordinates.
            visible: (B, K) float tensor, as ``encode``'s ``visible``.
        Returns:
            what stacking ``encode`` of every instance gives (same keys, shapes, float32), on
            ``joints.device``. This default *is* that: it runs the numpy reference per instance on
            the host (one device→host→device round trip per batch). Methods override it with a
            batched torch twin of ``encode`` (tested equal to it) so GPU training never leaves the device.
        """
        joints_np = joints.detach().float().cpu().numpy()
        visible_np = visible.detach().float().cpu().numpy()
        encoded = [self.encode(joints_np[i], visible_np[i]) for i in range(joints_np.shape[0])]
        return {
            key: torch.from_numpy(np.stack([np.asarray(e[key], dtype=np.float32) for e in encoded])).to(
                joints.device, non_blocking=True
            )
            for key in encoded[0]
        }

    # ----------------------------------------------------------------------------------- loss
    @abc.abstractmethod
    def loss(self, outputs: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> dict[str, Tensor]:
        """Loss of one mini-batch; ``{"loss": total, <part>: value, ...}`` (parts are logged).

        ``batch`` holds the method's encoded targets plus ``joints`` (N, K, 2) in heatmap
        coordinates and ``visible`` (N, K), which CAL's MGM needs.
        """

    # --------------------------------------------------------------------------------- decode
    @abc.abstractmethod
    def decode(self, outputs: Tensor) -> tuple[Tensor, Tensor]:
        """Final predictions: coordinates (N, K, 2) in heatmap pixels and confidences (N, K)."""

    def coarse_argmax(self, outputs: Tensor) -> Tensor:
        """Coarse prediction ŷ = argmax of the predicted heatmap/class map (N, K, 2), the quantity
        whose displacement from the truth the paper's Fig. 5 and Eq. 11 study."""
        heatmaps = self.heatmaps(outputs)
        n, k, h, w = heatmaps.shape
        flat = heatmaps.reshape(n, k, h * w).argmax(dim=-1)
        return torch.stack([(flat % w).float(), torch.div(flat, w, rounding_mode="floor").float()], dim=-1)

    def heatmaps(self, outputs: Tensor) -> Tensor:
        """The confidence maps part of the outputs (N, K, H, W)."""
        return outputs

    # ----------------------------------------------------------------------------------- flip
    @abc.abstractmethod
    def flip_outputs(self, outputs: Tensor, flip_index: Tensor) -> Tensor:
        """Map outputs of the horizontally flipped input back to the original frame (flip test)."""

    # --------------------------------------------------------------------------------- stages
    def stages(self, total_epochs: int) -> list[TrainingStage]:
        """Training stages; one by default. CAL overrides this (stage 1 + stage 2)."""
        return [TrainingStage("train", total_epochs, 0)]

    def uses_mgm(self, stage: TrainingStage) -> bool:
        """Whether ``stage``'s loss weights its offsets with a mask fitted to the predictions (CAL's
        MGM, Alg. 1); ``lrpose-bench bench`` then times :meth:`offset_weight`. Default: no."""
        return False

    def offset_weight(self, heatmaps: Tensor, batch: Mapping[str, Tensor], stage: TrainingStage) -> Tensor:
        """The per-pixel offset-loss weight of a stage where :meth:`uses_mgm` is true (CAL: the MGM
        sampled on the grid around each joint, Eq. 13). Only methods with an MGM define it."""
        raise NotImplementedError(f"method {self.name!r} has no prediction-dependent offset weight (uses_mgm)")

    # ------------------------------------------------------------------------- codec oracle
    def oracle_outputs(self, targets: Mapping[str, Tensor]) -> Tensor:
        """The output of a network that fits the stacked training ``targets`` exactly (the codec
        oracle, ``lrpose_bench/oracle.py``): what ``decode`` of a perfect network sees. Default: a
        ``heatmap`` target with :meth:`head_channels` channels is that output; other codecs override."""
        heatmap = targets.get("heatmap")
        if heatmap is not None and heatmap.ndim == 4 and heatmap.shape[1] == self.head_channels():
            return heatmap.float()
        from lrpose_bench.errors import UserError

        raise UserError(
            f"method {self.name!r} has no codec oracle: give it an oracle_outputs(targets) method "
            "or a 'heatmap' target with head_channels() channels"
        )

    # ------------------------------------------------------------------- pipeline hooks (SPSR)
    def train_resolution(self) -> Resolution:
        """Input resolution the pose network is trained at (SPSR+pose trains at 256×192)."""
        return self.context.resolution

    def prepare(  # noqa: B027  (an optional hook: doing nothing is the default, not abstract)
        self,
        *,
        bundle: Any,
        cfg: Any,
        run_dir: Any,
        cell_dir: Any,
        device: torch.device,
        progress: bool = True,
        image_cache: Any = None,
    ) -> None:
        """A pre-stage the engine runs once per cell before pose training, on the cell's data and
        device (``engine/cell.py::run_pre_stage``). It runs on the one method instance that then
        trains and is evaluated, so what it prepares (SPSR+pose: the super-resolution network it
        trains or reuses) is what :meth:`eval_input_transform` uses. Default: nothing."""

    def eval_crop_resolution(self) -> Resolution:
        """Size the evaluation crop is cut at (default: :meth:`train_resolution`). SPSR+pose
        answers the cell's native 64×48: the SR network then sees the very crop every native
        64×48 method sees, and the crop's matrix is lifted ×4 into the 256×192 frame the pose
        network reads (``data/dataset.py::lift_matrix``)."""
        return self.train_resolution()

    def eval_input_transform(self) -> Callable[[Tensor], Tensor] | None:
        """A transform of the evaluation input batch before the network (SPSR+pose: super-resolve
        the low-resolution crop); ``None`` (the default) feeds the crop as it is."""
        return None

    def describe_params(self) -> dict[str, Any]:
        """Constants as a plain dict, for reports and resolved configs."""
        if dataclasses.is_dataclass(self.params):
            return dataclasses.asdict(self.params)
        return dict(vars(self.params)) if self.params is not None else {}


def visible_weights(visible: Tensor) -> Tensor:
    """Per-joint loss weights (N, K, 1, 1) from visibility flags."""
    return visible.float()[..., None, None]
