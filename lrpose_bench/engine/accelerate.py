"""GPU fast-path helpers for the training step (issue 9), each with a CPU fallback.

At 64×48 a step of a W32-class network is launch-overhead-bound (the issue measured 942 img/s eager
at batch 128 on an H200), so the wins are fewer launches and no host synchronisation:

* :func:`configure_backends`: cuDNN autotuning (``cudnn.benchmark``) and TF32 matmuls when the run is
  not in deterministic mode (``train.deterministic: false``); nothing on a CPU.
* :func:`maybe_compile`: ``torch.compile`` behind the one flag ``train.compile`` (off by default).
  A compiled module's ``state_dict`` keys gain an ``_orig_mod.`` prefix, so checkpoints must be
  written from :func:`~lrpose_bench.engine.distributed.unwrap` (the original module).
* :class:`GraphedTrainStep`: forward + loss + backward + optimizer step captured once into a CUDA
  graph and replayed on static input tensors (the pattern of PyTorch's "CUDA Graphs" notes,
  whole-network capture). Requirements: fixed batch shape (``drop_last``), an optimizer built with
  ``capturable=True`` (Adam), a loss without host synchronisation (``.item()``, boolean indexing,
  numpy; CAL's MGM is written that way). Learning-rate changes go through the optimizer's tensor
  ``lr`` (see :meth:`GraphedTrainStep.set_lr`). On a CPU, or with ``enabled=False``, it runs the same
  step eagerly, so a caller has one code path.

Not yet measured on a GPU in this repository (written device-agnostic; CPU tests cover the fallbacks).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Mapping[str, Tensor]], Mapping[str, Tensor]]


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """cuDNN benchmark + TF32 for non-deterministic CUDA runs (deterministic runs keep cell.py's settings)."""
    if device.type != "cuda" or deterministic:
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def maybe_compile(model: nn.Module, enabled: bool, *, mode: str | None = None, backend: str | None = None) -> nn.Module:
    """``torch.compile(model)`` when ``enabled`` (``train.compile``), else ``model`` unchanged.

    Falls back to the eager model with a warning when this PyTorch cannot compile (no
    ``torch.compile``, or the backend fails to initialise, e.g. no C++ compiler for inductor on a CPU).
    """
    if not enabled:
        return model
    compile_fn = getattr(torch, "compile", None)
    if compile_fn is None:
        warnings.warn("train.compile: this PyTorch has no torch.compile; training eagerly", stacklevel=2)
        return model
    kwargs: dict[str, Any] = {}
    if mode:
        kwargs["mode"] = mode
    if backend:
        kwargs["backend"] = backend
    try:
        return compile_fn(model, **kwargs)
    except Exception as error:  # compile is an optimisation: never fail a run for it
        warnings.warn(f"train.compile: torch.compile failed ({type(error).__name__}: {error}); training eagerly",
                      stacklevel=2)
        return model


def adam_for(model: nn.Module, lr: float, weight_decay: float, device: torch.device, graphed: bool = False
             ) -> torch.optim.Optimizer:
    """Adam as the trainer builds it (fused on CUDA); ``graphed`` makes it capturable with a tensor lr."""
    if device.type == "cuda" and graphed:
        return torch.optim.Adam(model.parameters(), lr=torch.tensor(lr, device=device), weight_decay=weight_decay,
                                capturable=True)
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, **kwargs)


class GraphedTrainStep:
    """One training step (zero_grad, forward, loss, backward, optimizer step), CUDA-graphed when possible.

    ``step(batch)`` copies the batch's tensors into static buffers, replays the graph and returns the
    loss tensors (static: read them before the next step, ideally only every N steps). Keys and shapes
    of ``batch`` must equal those of ``example``. ``loss_fn(outputs, batch)`` wraps ``method.loss``
    with the current stage (re-capture when the stage changes: CAL's stage 2 is another graph).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
                 example: Mapping[str, Tensor], *, enabled: bool = True, warmup: int = 3,
                 autocast_dtype: torch.dtype | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.autocast_dtype = autocast_dtype
        device = example["image"].device
        self.device = device
        self.graphed = bool(enabled and device.type == "cuda" and torch.cuda.is_available())
        self.graph: Any = None
        self.static: dict[str, Tensor] = {}
        self.static_losses: dict[str, Tensor] = {}
        if self.graphed:
            self._capture(example, warmup)

    def _eager(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None):
            outputs = self.model(batch["image"])
        losses = dict(self.loss_fn(outputs.float(), batch))
        losses["loss"].backward()
        self.optimizer.step()
        return {k: v.detach() for k, v in losses.items()}

    def _capture(self, example: Mapping[str, Tensor], warmup: int) -> None:
        self.static = {k: v.clone() for k, v in example.items() if torch.is_tensor(v)}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up allocates optimizer state and autotunes kernels
            for _ in range(max(1, warmup)):
                self._eager(self.static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.static_losses = self._eager(self.static)

    def set_lr(self, lr: float) -> None:
        """Change the learning rate without re-capture (tensor lr of a capturable optimizer)."""
        for group in self.optimizer.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def step(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if not self.graphed:
            return self._eager(batch)
        for key, buffer in self.static.items():
            buffer.copy_(batch[key], non_blocking=True)
        self.graph.replay()
        return self.static_losses
