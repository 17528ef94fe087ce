"""SPSR generator and gradient maps (Maclory/SPSR architecture.py, SPSR_model.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.baselines.spsr.generator import (
    REFERENCE_TAPS,
    SPSRGenerator,
    bicubic_upsample,
    count_parameters,
    default_taps,
)
from lrpose_bench.baselines.spsr.gradient import GRADIENT_EPS, gradient_map
from lrpose_bench.errors import ConfigError


def conv(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def rrdb(nf: int, gc: int) -> int:
    return 3 * (sum(conv(nf + i * gc, gc) for i in range(4)) + conv(nf + 4 * gc, nf))


def spsr_parameters(nf: int, nb: int, gc: int, n_up: int = 2) -> int:
    """Parameter count of SPSRNet written out from the reference's layer list."""
    sr_branch = conv(3, nf) + nb * rrdb(nf, gc) + conv(nf, nf) + n_up * conv(nf, nf) + 2 * conv(nf, nf)
    grad_branch = (
        conv(3, nf)
        + 4 * (rrdb(2 * nf, gc) + conv(2 * nf, nf))
        + conv(nf, nf)
        + n_up * conv(nf, nf)
        + 2 * conv(nf, nf)
        + conv(nf, 3, 1)
    )
    fusion = rrdb(2 * nf, gc) + conv(2 * nf, nf) + conv(nf, nf) + conv(nf, 3)
    return sr_branch + grad_branch + fusion


@pytest.mark.parametrize("lr_size", [(16, 12), (64, 48), (9, 7)])
def test_small_generator_output_is_x4(lr_size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    gen = SPSRGenerator(nf=8, nb=4, gc=4).eval()
    lr = torch.rand(2, 3, *lr_size)
    with torch.no_grad():
        grad_out, sr, lr_grad = gen(lr)
    h, w = lr_size
    assert sr.shape == grad_out.shape == (2, 3, 4 * h, 4 * w)
    assert lr_grad.shape == lr.shape
    assert torch.isfinite(sr).all()
    # the LR gradient map is the no-padding extractor applied to the input
    torch.testing.assert_close(lr_grad, gradient_map(lr, padding=1))


def test_parameter_count_matches_reference_layout() -> None:
    assert count_parameters(SPSRGenerator(nf=16, nb=4, gc=8)) == spsr_parameters(16, 4, 8)
    paper = SPSRGenerator(nf=64, nb=23, gc=32)
    assert count_parameters(paper) == spsr_parameters(64, 23, 32)
    assert paper.taps == REFERENCE_TAPS


def test_taps_scale_with_depth() -> None:
    assert default_taps(23) == (5, 10, 15, 20)
    assert default_taps(4) == (1, 2, 3, 4)
    assert default_taps(8) == (2, 4, 6, 8)
    assert default_taps(1) == (1, 1, 1, 1)
    with pytest.raises(ConfigError, match="taps"):
        SPSRGenerator(nf=4, nb=4, gc=4, taps=[1, 2, 5, 3])
    with pytest.raises(ConfigError, match="power of 2"):
        SPSRGenerator(nf=4, nb=1, gc=4, scale=3)


def test_trunk_taps_feed_the_gradient_branch() -> None:
    """Changing trunk block 1 must change the output through the tap after block 1 too."""
    torch.manual_seed(0)
    gen = SPSRGenerator(nf=4, nb=4, gc=4).eval()
    seen = []
    for block in gen.b_blocks:
        block.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    with torch.no_grad():
        gen(torch.rand(1, 3, 6, 5))
    assert seen == [8, 8, 8, 8]  # concat(branch nf, trunk nf) at every stage


def ramp(a: float, b: float, h: int = 9, w: int = 11) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return (a * xs + b * ys)[None, None]


@pytest.mark.parametrize("a,b", [(1.0, 0.0), (0.0, 2.0), (0.5, -1.5), (3.0, 4.0)])
def test_gradient_of_a_ramp(a: float, b: float) -> None:
    image = ramp(a, b)
    g = gradient_map(image, padding=1)
    # interior: central differences of a plane are (2a, 2b)
    expected = np.sqrt((2 * a) ** 2 + (2 * b) ** 2 + GRADIENT_EPS)
    np.testing.assert_allclose(g[0, 0, 1:-1, 1:-1].numpy(), expected, rtol=1e-12)
    # borders: zero padding, e.g. left column dh = I(y, 1) - 0, dv = 2b
    h, w = image.shape[-2:]
    ys = np.arange(1, h - 1)
    left = np.sqrt((a * 1 + b * ys) ** 2 + (2 * b) ** 2 + GRADIENT_EPS)
    np.testing.assert_allclose(g[0, 0, 1:-1, 0].numpy(), left, rtol=1e-12)
    # padding 2 (Get_gradient): 2 px larger, same interior values
    g2 = gradient_map(image, padding=2)
    assert g2.shape[-2:] == (h + 2, w + 2)
    np.testing.assert_allclose(g2[0, 0, 2:-2, 2:-2].numpy(), expected, rtol=1e-12)


def numpy_gradient(image: np.ndarray) -> np.ndarray:
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)))
    dv = padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]
    dh = padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]
    return np.sqrt(dv**2 + dh**2 + GRADIENT_EPS)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.integers(2, 12), st.integers(2, 12), st.integers(0, 2**31 - 1))
def test_gradient_matches_numpy_per_channel(channels: int, h: int, w: int, seed: int) -> None:
    image = np.random.default_rng(seed).normal(size=(channels, h, w))
    g = gradient_map(torch.from_numpy(image)[None], padding=1)[0].numpy()
    np.testing.assert_allclose(g, numpy_gradient(image), rtol=1e-10, atol=1e-12)


def test_bicubic_upsample_is_x4_and_keeps_constants() -> None:
    lr = torch.full((1, 3, 16, 12), 0.25)
    up = bicubic_upsample(lr, 4)
    assert up.shape == (1, 3, 64, 48)
    torch.testing.assert_close(up, torch.full_like(up, 0.25))


def test_bicubic_skip_starts_at_the_bicubic_image() -> None:
    """The quick profile's deviation: SR = bicubic(LR) + residual, the residual near zero at
    initialisation (×0.1 Kaiming through every conv), so training starts from the bicubic image."""
    torch.manual_seed(0)
    gen = SPSRGenerator(nf=4, nb=2, gc=4, bicubic_skip=True).eval()
    lr = torch.rand(1, 3, 8, 6)
    with torch.no_grad():
        _, sr, _ = gen(lr)
    expected = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert (sr - expected).abs().max() < 1e-2
    plain = SPSRGenerator(nf=4, nb=2, gc=4, bicubic_skip=False).eval()
    plain.load_state_dict(gen.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(plain(lr)[1] + expected, sr)
    assert count_parameters(gen) == spsr_parameters(4, 2, 4)
