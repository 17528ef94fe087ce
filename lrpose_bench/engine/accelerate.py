"""Fast-path helpers for the training step, on CUDA and on the CPU.

At 64×48 a step of a W32-class network is launch-overhead-bound (the issue measured 942 img/s eager
at batch 128 on an H200), so the wins are fewer launches and no host synchronisation:

* :func:`configure_backends`: cuDNN autotuning (``cudnn.benchmark``) and TF32 matmuls when the run is
  not in deterministic mode (``train.deterministic: false``); nothing on a CPU.
* :func:`maybe_compile`: ``torch.compile`` behind the one flag ``train.compile`` (off by default).
  A compiled module's ``state_dict`` keys gain an ``_orig_mod.`` prefix, so checkpoints must be
  written from :func:`~lrpose_bench.engine.distributed.unwrap` (the original module).
* :class:`TrainStep`: the trainer's (and ``bench``'s) step; with ``train.cuda_graphs`` the forward +
  loss + backward + optimizer step are captured once into a CUDA graph and replayed on static input
  tensors (the pattern of PyTorch's "CUDA Graphs" notes, whole-network capture). On a CPU it runs
  the same step eagerly, so a caller has one code path.
* :func:`autocast_dtype`: ``train.amp`` is bf16 autocast on CUDA and on CPUs with native bf16
  arithmetic (AVX-512-BF16 or AMX, :func:`cpu_has_native_bf16`); elsewhere fp32, because emulated
  bf16 is slower than fp32 there. ``channels_last`` applies on both devices (oneDNN's convolutions
  prefer NHWC too). Measured on the 2-core AVX-512-BF16 EPYC with ``lrpose-bench bench`` (hrnet-w8,
  64×48, 2 threads): the model step at batch 128 goes from ~490 img/s (fp32, NCHW) to ~750-820
  (bf16 + NHWC); fused Adam on the CPU takes 0.9 ms a step against 4.8 ms for the for-loop one.

Not yet measured on a GPU in this repository (written device-agnostic; CPU tests cover the fallbacks).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Mapping[str, Tensor]], Mapping[str, Tensor]]


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN computes bf16 natively here (AVX-512-BF16 or AMX, and not capped below them by
    ``ONEDNN_MAX_CPU_ISA``): only then does CPU bf16 autocast speed a step up. Measured on the
    AVX-512-BF16 EPYC with ``ONEDNN_MAX_CPU_ISA=AVX2``: bf16 autocast 100 img/s against 570 in fp32,
    while the CPU flags still say ``avx512_bf16``, so oneDNN's own answer is the one asked."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(check())
    except RuntimeError:
        return False


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype a step runs under with ``train.amp = amp`` on ``device``: bf16 on CUDA and
    on CPUs with native bf16, ``None`` (fp32) otherwise. bf16 has fp32's range, so no loss scaling."""
    if not amp:
        return None
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def precision_name(device: torch.device, amp: bool) -> str:
    """``"bf16-autocast"`` or ``"fp32"``: what :func:`autocast_dtype` gives, for ``metrics.json``."""
    return "bf16-autocast" if autocast_dtype(device, amp) is not None else "fp32"


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
        warnings.warn(
            f"train.compile: torch.compile failed ({type(error).__name__}: {error}); training eagerly", stacklevel=2
        )
        return model


def adam_for(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    device: torch.device,
    graphed: bool = False,
    *,
    fused: bool = True,
) -> torch.optim.Optimizer:
    """Adam as the trainer builds it: fused (one kernel over every parameter) on CUDA and on the CPU,
    where PyTorch has a fused CPU Adam since 2.4 (hrnet-w8: 0.9 ms a step against 4.8 ms for the
    per-parameter loop; ``fused=False``, ``train.fused_adam``: the loop); ``graphed`` makes it
    capturable with a tensor lr."""
    if device.type == "cuda" and graphed:
        return torch.optim.Adam(
            model.parameters(), lr=torch.tensor(lr, device=device), weight_decay=weight_decay, capturable=True
        )
    kwargs = {"fused": True} if fused and device.type in ("cuda", "cpu") else {}
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, **kwargs)


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Re-arm a capturable Adam after ``load_state_dict``: a checkpoint written by an eager run
    restores ``capturable=False``, a float lr and CPU ``step`` counters, which graph capture refuses."""
    for group in optimizer.param_groups:
        group["capturable"] = True
        if group.get("fused"):  # an eager CUDA run's fused Adam: use the capturable foreach kernels
            group["fused"] = False
        if not torch.is_tensor(group["lr"]):
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state and torch.is_tensor(state["step"]):
                state["step"] = state["step"].to(device=device, dtype=torch.float32)


class TrainStep:
    """One optimisation step: zero_grad, forward (bf16 autocast, channels_last), loss, backward, Adam.

    ``step(batch)`` returns the loss tensors on the device (no host synchronisation: the trainer
    reads them every ``train.sync_every`` steps). With ``graphed`` on CUDA the step is captured into
    one CUDA graph on the first batch and replayed on static input buffers (PyTorch "CUDA Graphs",
    whole-network capture). Requirements: fixed batch shape (``drop_last``), an optimizer from
    :func:`adam_for` with ``graphed=True``, a loss without host synchronisation (``.item()``, boolean
    indexing, numpy; CAL's MGM is written that way), one capture per training stage (the loss
    changes; the trainer builds a new step per stage). The warm-up steps that capture needs are
    undone (weights, buffers, optimizer state restored), so graphed and eager training follow the
    same trajectory. The returned tensors of a graphed step are static: read or copy them before the
    next step. On a CPU, or with ``graphed=False``, the same step runs eagerly: one code path.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: LossFn,
        *,
        device: torch.device,
        amp: bool = False,
        channels_last: bool = False,
        graphed: bool = False,
        warmup: int = 3,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.device = device
        self.autocast = autocast_dtype(device, amp)
        self.amp = self.autocast is not None
        self.channels_last = bool(channels_last)
        self.graphed = bool(graphed and device.type == "cuda" and torch.cuda.is_available())
        self.warmup = max(1, warmup)
        self.graph: Any = None
        self.static: dict[str, Tensor] = {}
        self.static_losses: dict[str, Tensor] = {}

    # ------------------------------------------------------------------------------ eager
    def forward(self, images: Tensor) -> Tensor:
        """The model's float32 outputs under the step's settings (channels_last, bf16 autocast)."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.model(images).float()

    def _eager(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        losses = dict(self.loss_fn(self.forward(batch["image"]), batch))
        losses["loss"].backward()
        self.optimizer.step()
        return {k: v.detach() for k, v in losses.items()}

    # ---------------------------------------------------------------------------- capture
    def _snapshot(self) -> tuple[list[Tensor], list[Tensor], dict[int, dict[str, Tensor]]]:
        params = [p.detach().clone() for p in self.model.parameters()]
        buffers = [b.detach().clone() for b in self.model.buffers()]
        state = {
            id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in self.optimizer.state.items()
        }
        return params, buffers, state

    def _restore(self, snapshot: tuple[list[Tensor], list[Tensor], dict[int, dict[str, Tensor]]]) -> None:
        """Undo the warm-up in place (the graph holds these tensors' addresses): weights, buffers,
        and the optimizer state (zeros = a fresh Adam's state where there was none)."""
        params, buffers, state = snapshot
        with torch.no_grad():
            for tensor, saved in zip(self.model.parameters(), params):
                tensor.copy_(saved)
            for tensor, saved in zip(self.model.buffers(), buffers):
                tensor.copy_(saved)
            for param, entries in self.optimizer.state.items():
                saved_entries = state.get(id(param), {})
                for key, value in entries.items():
                    if torch.is_tensor(value):
                        value.copy_(saved_entries[key]) if key in saved_entries else value.zero_()

    def _capture(self, example: Mapping[str, Tensor]) -> None:
        self.static = {k: v.clone() for k, v in example.items() if torch.is_tensor(v) and v.device.type == "cuda"}
        snapshot = self._snapshot()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up: allocates optimizer state, autotunes kernels
            for _ in range(self.warmup):
                self._eager(self.static)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.static_losses = self._eager(self.static)
        self._restore(snapshot)

    # ------------------------------------------------------------------------------- api
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
        if self.graph is None:
            self._capture(batch)
        for key, buffer in self.static.items():
            buffer.copy_(batch[key], non_blocking=True)
        self.graph.replay()
        return self.static_losses
