"""Source degradations: presets, determinism, and each operation's documented effect."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lrpose_bench.data import degrade as D
from lrpose_bench.errors import ConfigError

WIDTH = 200  # every test frequency below has a whole number of periods across it


def sinusoid(frequency: float, height: int = 40, width: int = WIDTH, amplitude: float = 60.0) -> np.ndarray:
    """(H, W, 3) uint8 image varying as cos(2π f x) along x (f in cycles per source pixel)."""
    x = np.arange(width)
    row = np.rint(128.0 + amplitude * np.cos(2.0 * np.pi * frequency * x))
    return np.ascontiguousarray(np.broadcast_to(row[None, :, None], (height, width, 3)).astype(np.uint8))


def amplitude_at(image: np.ndarray, frequency: float) -> float:
    """Amplitude of the cos/sin component at ``frequency`` of the column-mean profile (channel 0)."""
    row = image[..., 0].astype(np.float64).mean(0)
    x = np.arange(row.size)
    return float(2.0 * abs((row * np.exp(-2j * np.pi * frequency * x)).mean()))


def ac_ratio(image: np.ndarray, amplitude: float = 60.0) -> float:
    """RMS of the remaining variation relative to the input sinusoid's RMS (aliases included)."""
    return float(image[..., 0].astype(np.float64).mean(0).std() / (amplitude / np.sqrt(2.0)))


def high_frequency_energy(image: np.ndarray, cutoff: float = 0.25) -> float:
    """Spectral energy above ``cutoff`` cycles/pixel (radially), all channels."""
    data = image.astype(np.float64)
    data = data - data.mean(axis=(0, 1))
    # Hann window: the FFT's periodic wrap-around edge would otherwise add energy no blur removes
    data = data * np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1]))[..., None]
    spectrum = np.abs(np.fft.fft2(data, axes=(0, 1))) ** 2
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.fftfreq(image.shape[1])[None, :]
    mask = np.hypot(fy, fx) > cutoff
    return float(spectrum[mask].sum())


def random_image(seed: int = 0, shape: tuple[int, int] = (64, 80)) -> np.ndarray:
    return (np.random.default_rng(seed).random((*shape, 3)) * 255).astype(np.uint8)


def preset_from(data: dict, name: str = "p") -> D.Preset:
    doc = {"presets": {"clean": {"version": 1, "train": False, "eval": False}, name: data}}
    return D.parse_presets(doc, Path("test.yaml"))[name]


# ------------------------------------------------------------------------------ presets
def test_named_versioned_presets_load_from_yaml():
    for name in ("clean", "lr-mild", "lr-severe"):
        info = D.describe_preset(name)
        assert info["name"] == name and isinstance(info["version"], int) and info["version"] >= 1
        assert info["label"] == f"{name} v{info['version']}"
    assert D.describe_preset("clean")["steps"] == {}
    severe = D.describe_preset("lr-severe")
    assert set(severe["steps"]) == {"blur", "downsample", "noise", "jpeg"}
    assert severe["train"] and severe["eval"]
    mild = D.PRESETS["lr-mild"]
    # severe is severe: every range sits at or beyond the mild one
    assert D.PRESETS["lr-severe"].blur.sigma.high > mild.blur.sigma.high
    assert D.PRESETS["lr-severe"].downsample.factor.high > mild.downsample.factor.high
    assert D.PRESETS["lr-severe"].jpeg.quality.low < mild.jpeg.quality.low


def test_eval_only_variants_inherit_steps_not_phases():
    base, variant = D.PRESETS["lr-severe"], D.PRESETS["lr-severe-eval"]
    assert variant.extends == "lr-severe"
    for step in ("blur", "downsample", "noise", "jpeg"):
        assert getattr(variant, step) == getattr(base, step) is not None
    assert D.source_transform("lr-severe-eval", train=True, seed=0) is None
    assert D.source_transform("lr-severe-eval", train=False, seed=0) is not None


def test_source_transform_is_none_for_clean_and_for_phases_it_skips():
    assert D.source_transform("clean", train=True, seed=0) is None
    assert D.source_transform("clean", train=False, seed=0) is None
    assert isinstance(D.source_transform("lr-mild", train=True, seed=0), D.SourceTransform)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ConfigError) as info:
        D.source_transform("lr-extreme", train=False, seed=0)
    message = str(info.value)
    assert "lr-extreme" in message and "lr-mild" in message and "lr-severe" in message and "clean" in message
    with pytest.raises(ConfigError):
        D.describe_preset("nope")


@pytest.mark.parametrize(
    "entry, fragment",
    [
        ({"version": 1, "train": True, "eval": True, "sharpen": {}}, "sharpen"),
        ({"version": 0, "train": True, "eval": True}, "version"),
        ({"train": True, "eval": True}, "version"),
        ({"version": 1, "train": "yes", "eval": True}, "train"),
        ({"version": 1, "train": True, "eval": True, "blur": {"sigma": [2.0, 1.0]}}, "blur.sigma"),
        ({"version": 1, "train": True, "eval": True, "blur": {"p": 1.5, "sigma": 1.0}}, "blur.p"),
        ({"version": 1, "train": True, "eval": True, "downsample": {"factor": [0.5, 2]}}, "downsample.factor"),
        ({"version": 1, "train": True, "eval": True, "downsample": {"factor": 2, "kernel": "lanczos"}}, "kernel"),
        ({"version": 1, "train": True, "eval": True, "downsample": {"factor": 2, "upsample": "area"}}, "upsample"),
        ({"version": 1, "train": True, "eval": True, "jpeg": {"quality": [10, 100]}}, "jpeg.quality"),
        ({"version": 1, "train": True, "eval": True, "jpeg": {"quality": [10.5, 20]}}, "jpeg.quality"),
        ({"version": 1, "train": True, "eval": True, "noise": {"p": 1.0}}, "sigma"),
        ({"extends": "missing", "version": 1}, "missing"),
    ],
)
def test_malformed_presets_raise_config_error_naming_the_key(entry, fragment):
    with pytest.raises(ConfigError) as info:
        preset_from(entry)
    assert fragment in str(info.value) and "test.yaml" in str(info.value)


def test_presets_file_needs_a_clean_identity_preset():
    with pytest.raises(ConfigError, match="clean"):
        D.parse_presets({"presets": {"x": {"version": 1, "train": True, "eval": True}}}, Path("t.yaml"))
    with pytest.raises(ConfigError, match="clean"):
        D.parse_presets(
            {"presets": {"clean": {"version": 1, "train": False, "eval": True, "blur": {"sigma": 1.0}}}}, Path("t.yaml")
        )


# -------------------------------------------------------------------------- determinism
def test_evaluation_degradation_is_a_function_of_seed_and_index():
    image = random_image()
    original = image.copy()
    first = D.source_transform("lr-severe", train=False, seed=3)
    second = D.source_transform("lr-severe", train=False, seed=3)
    outputs = {i: first(image, i) for i in (0, 1, 2)}
    # any order, fresh object: identical arrays
    for i in (2, 0, 1, 0):
        np.testing.assert_array_equal(second(image, i), outputs[i])
    np.testing.assert_array_equal(image, original)  # the cached source image is never modified
    assert not np.array_equal(outputs[0], outputs[1])
    other_seed = D.source_transform("lr-severe", train=False, seed=4)
    assert not np.array_equal(other_seed(image, 0), outputs[0])
    # an evaluation transform ignores the epoch
    np.testing.assert_array_equal(first(image, 1, epoch=7), outputs[1])


def test_training_degradation_varies_with_epoch_and_is_reproducible():
    image = random_image(1)
    train = D.source_transform("lr-mild", train=True, seed=0)
    again = D.source_transform("lr-mild", train=True, seed=0)
    np.testing.assert_array_equal(train(image, 5, epoch=2), again(image, 5, epoch=2))
    assert train.params(5, epoch=2) != train.params(5, epoch=3)
    assert train.params(5, epoch=2) != D.source_transform("lr-mild", train=False, seed=0).params(5)
    # without an epoch, a per-index counter stands in for it: epoch 0, 1, ... in call order
    counted = D.source_transform("lr-mild", train=True, seed=0)
    np.testing.assert_array_equal(counted(image, 5), train(image, 5, epoch=0))
    np.testing.assert_array_equal(counted(image, 5), train(image, 5, epoch=1))


def test_degradation_streams_do_not_coincide_with_the_augmentation_stream():
    transform = D.SourceTransform(D.PRESETS["lr-mild"], train=True, seed=0)
    ours = transform.generator(4, epoch=1).random(4)
    augmentation = np.random.default_rng([0, 1, 4]).random(4)  # PoseDataset's (seed, epoch, index)
    assert not np.allclose(ours, augmentation)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), index=st.integers(0, 10**6))
def test_sampled_parameters_stay_inside_the_preset_ranges(seed, index):
    preset = D.PRESETS["lr-severe"]
    params = D.SourceTransform(preset, train=False, seed=seed).params(index)
    assert preset.blur.sigma.low <= params.blur_sigma <= preset.blur.sigma.high
    assert preset.downsample.factor.low <= params.factor <= preset.downsample.factor.high
    assert params.kernel in preset.downsample.kernels
    assert preset.noise.sigma.low <= params.noise_sigma <= preset.noise.sigma.high
    assert preset.jpeg.quality.low <= params.jpeg_quality <= preset.jpeg.quality.high
    assert isinstance(params.jpeg_quality, int)


def test_step_probability_zero_skips_the_step_and_keeps_other_draws():
    always = preset_from(
        {"version": 1, "train": True, "eval": True, "blur": {"sigma": [0.5, 2.0]}, "jpeg": {"quality": [20, 90]}}
    )
    never_blur = preset_from(
        {
            "version": 1,
            "train": True,
            "eval": True,
            "blur": {"p": 0.0, "sigma": [0.5, 2.0]},
            "jpeg": {"quality": [20, 90]},
        }
    )
    a = always.sample(np.random.default_rng(11))
    b = never_blur.sample(np.random.default_rng(11))
    assert b.blur_sigma is None and a.blur_sigma is not None
    assert a.jpeg_quality == b.jpeg_quality


# ---------------------------------------------------------------------------------- blur
@pytest.mark.parametrize("frequency, sigma", [(0.05, 2.0), (0.1, 1.5), (0.15, 1.0)])
def test_blur_attenuates_a_sinusoid_as_the_gaussian_transfer_function(frequency, sigma):
    """A Gaussian of std σ multiplies cos(2πfx) by exp(-2π²σ²f²)."""
    image = sinusoid(frequency)
    ratio = amplitude_at(D.gaussian_blur(image, sigma), frequency) / amplitude_at(image, frequency)
    assert ratio == pytest.approx(np.exp(-2.0 * np.pi**2 * sigma**2 * frequency**2), abs=0.02)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), low=st.floats(0.3, 1.2), step=st.floats(0.2, 0.8))
def test_blur_lowers_high_frequency_energy_monotonically(seed, low, step):
    """σ ≤ 2: beyond it the energy above 0.25 cycles/px (×exp(-4π²σ²f²) ≤ 1e-3) sinks under the
    uint8 rounding noise that every blurred image carries, and the comparison measures rounding."""
    image = random_image(seed, (48, 48))
    high = low + step
    e0 = high_frequency_energy(image)
    e_low = high_frequency_energy(D.gaussian_blur(image, low))
    e_high = high_frequency_energy(D.gaussian_blur(image, high))
    assert e_low < e0
    assert e_high < e_low
    np.testing.assert_array_equal(D.gaussian_blur(image, 0.0), image)


def test_blur_keeps_the_mean_brightness():
    image = random_image(2)
    assert D.gaussian_blur(image, 1.5).mean() == pytest.approx(image.mean(), abs=0.5)


# ------------------------------------------------------------------------- downsampling
@pytest.mark.parametrize("kernel", ["bicubic", "bilinear", "area"])
def test_down_up_keeps_a_sinusoid_well_below_the_new_nyquist(kernel):
    # k = 4: new Nyquist 0.125 cycles/px; f = 0.02 is 16 % of it
    out = D.down_up(sinusoid(0.02), 4, kernel)
    assert out.shape == (40, WIDTH, 3) and out.dtype == np.uint8
    assert amplitude_at(out, 0.02) / 60.0 > 0.95


@pytest.mark.parametrize("kernel", ["bicubic", "bilinear"])
@pytest.mark.parametrize("frequency", [0.2, 0.3, 0.4, 0.5])
def test_antialiased_down_up_removes_a_sinusoid_above_the_new_nyquist(kernel, frequency):
    out = D.down_up(sinusoid(frequency), 4, kernel)
    assert amplitude_at(out, frequency) / 60.0 < 0.01
    assert ac_ratio(out) < 0.06  # nothing aliases back either (beyond the kernel's transition band)


@pytest.mark.parametrize("frequency", [0.25, 0.5])
def test_area_down_up_removes_sinusoids_whose_period_divides_the_factor(frequency):
    """Averaging k = 4 samples of a period-4 (or period-2) cosine gives exactly its mean."""
    out = D.down_up(sinusoid(frequency), 4, "area")
    assert ac_ratio(out) < 0.01


@pytest.mark.parametrize("frequency", [0.3, 0.4])
def test_area_down_up_aliases_what_the_box_filter_lets_through(frequency):
    """Area reduction by k = 4 is a 4-tap box, |D(f)| = |sin(πfk) / (k sin(πf))|; the survivor aliases to
    ν = |fk - round(fk)| cycles per reduced pixel, and bilinear enlargement passes it by sinc²(ν)."""
    k = 4
    out = D.down_up(sinusoid(frequency), k, "area")
    box = abs(np.sin(np.pi * frequency * k) / (k * np.sin(np.pi * frequency)))
    nu = abs(frequency * k - round(frequency * k))
    expected = box * np.sinc(nu) ** 2
    assert amplitude_at(out, nu / k) / 60.0 == pytest.approx(expected, rel=0.05)
    assert amplitude_at(out, frequency) / 60.0 < 0.01


@settings(max_examples=25, deadline=None)
@given(
    factor=st.floats(1.3, 4.0),
    cx=st.floats(40.0, 88.0),
    cy=st.floats(30.0, 66.0),
    kernel=st.sampled_from(["bicubic", "bilinear", "area"]),
)
def test_down_up_keeps_the_coordinate_frame(factor, cx, cy, kernel):
    """A blob's centroid does not move: the person loses detail, not position (module docstring)."""
    yy, xx = np.mgrid[0:96, 0:128]
    blob = np.rint(200.0 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 6.0**2))).astype(np.uint8)
    out = D.down_up(np.repeat(blob[..., None], 3, axis=2), factor, kernel)[..., 0].astype(np.float64)
    ref = blob.astype(np.float64)
    for grid in (xx, yy):
        assert (out * grid).sum() / out.sum() == pytest.approx((ref * grid).sum() / ref.sum(), abs=0.1)


def test_reduced_size_rounds_and_never_vanishes():
    assert D.reduced_size(120, 160, 4) == (30, 40)
    assert D.reduced_size(121, 161, 2.5) == (48, 64)
    assert D.reduced_size(3, 3, 10) == (1, 1)
    np.testing.assert_array_equal(D.down_up(random_image(), 1.0), random_image())


# ---------------------------------------------------------------------------- noise/JPEG
def test_gaussian_noise_has_the_requested_standard_deviation():
    flat = np.full((200, 200, 3), 128, np.uint8)
    noisy = D.add_gaussian_noise(flat, 6.0, np.random.default_rng(0))
    diff = noisy.astype(np.float64) - 128.0
    assert diff.std() == pytest.approx(6.0, rel=0.03)
    assert abs(diff.mean()) < 0.1
    np.testing.assert_array_equal(noisy, D.add_gaussian_noise(flat, 6.0, np.random.default_rng(0)))
    # clipping keeps uint8
    assert D.add_gaussian_noise(np.full((8, 8, 3), 250, np.uint8), 50.0, np.random.default_rng(1)).max() <= 255


@pytest.mark.parametrize("quality", [10, 35, 75, 95])
def test_jpeg_matches_pillow_byte_for_byte(quality):
    image = random_image(quality, (40, 56))
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    assert D.jpeg_bytes(image, quality) == buffer.getvalue()
    reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    np.testing.assert_array_equal(D.jpeg_compress(image, quality), reference)
    # a preset made of one JPEG step at a fixed quality is exactly Pillow's round trip
    preset = preset_from({"version": 1, "train": False, "eval": True, "jpeg": {"quality": quality}})
    transform = D.SourceTransform(preset, train=False, seed=0)
    np.testing.assert_array_equal(transform(image, 9), reference)


def test_lower_jpeg_quality_loses_more():
    image = D.gaussian_blur(random_image(5, (64, 64)), 1.0)
    errors = [np.abs(D.jpeg_compress(image, q).astype(int) - image).mean() for q in (90, 50, 15)]
    assert errors[0] < errors[1] < errors[2]


# ------------------------------------------------------------------------- whole presets
@pytest.mark.parametrize("name", ["lr-mild", "lr-severe"])
def test_presets_keep_shape_and_remove_detail(name):
    image = random_image(7, (96, 72))
    transform = D.source_transform(name, train=False, seed=0)
    out = transform(image, 0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert high_frequency_energy(out) < 0.5 * high_frequency_energy(image)


def test_severe_removes_more_than_mild_on_average():
    image = random_image(8, (96, 72))
    mild = D.source_transform("lr-mild", train=False, seed=0)
    severe = D.source_transform("lr-severe", train=False, seed=0)
    energy = lambda f: np.mean([high_frequency_energy(f(image, i), cutoff=0.1) for i in range(6)])  # noqa: E731
    assert energy(severe) < energy(mild)


def test_noise_and_jpeg_happen_at_the_reduced_resolution():
    """With a reduction, the noise is smooth after enlargement (no per-source-pixel noise)."""
    flat = np.full((96, 96, 3), 128, np.uint8)
    params = D.DegradationParams(factor=4.0, kernel="area", noise_sigma=8.0)
    out = D.apply_params(flat, params, np.random.default_rng(0)).astype(np.float64)
    direct = D.add_gaussian_noise(flat, 8.0, np.random.default_rng(0)).astype(np.float64)
    # neighbouring pixels are strongly correlated after enlargement, independent without it
    corr = lambda a: np.corrcoef(a[:, :-1, 0].ravel(), a[:, 1:, 0].ravel())[0, 1]  # noqa: E731
    assert corr(out) > 0.6 and abs(corr(direct)) < 0.1


def test_dataset_hook_degrades_crops_deterministically_and_keeps_the_frame(coco_fixture):
    """PoseDataset applies the hook to the source image; the crop matrix and joints are unchanged."""
    from lrpose_bench.config import load_config
    from lrpose_bench.data.coco import load_split
    from lrpose_bench.data.dataset import PoseDataset
    from lrpose_bench.engine.cell import CellSpec, build_method
    from lrpose_bench.resolution import Resolution

    ann, images, _ = coco_fixture
    split = load_split("fixture", ann, images)
    res = Resolution(64, 48)
    cfg = load_config("quick")
    method = build_method(CellSpec("hrnet", "hrnet-w8", res), cfg)

    def dataset(transform):
        return PoseDataset(split, method, res, train=False, source_transform=transform)

    clean = dataset(None)[1]
    a = dataset(D.source_transform("lr-severe", train=False, seed=0))[1]
    b = dataset(D.source_transform("lr-severe", train=False, seed=0))[1]
    assert np.array_equal(a["image"].numpy(), b["image"].numpy())
    assert not np.array_equal(a["image"].numpy(), clean["image"].numpy())
    assert np.array_equal(a["matrix"].numpy(), clean["matrix"].numpy())
    assert np.array_equal(a["joints"].numpy(), clean["joints"].numpy())


def test_engine_hook_uses_the_configured_preset():
    from lrpose_bench.config import load_config
    from lrpose_bench.engine.cell import _source_transform

    assert _source_transform(load_config("quick"), train=False) is None
    cfg = load_config("quick", overrides={"degrade": "lr-severe-eval"})
    assert _source_transform(cfg, train=True) is None
    hook = _source_transform(cfg, train=False)
    assert isinstance(hook, D.SourceTransform) and hook.preset.name == "lr-severe-eval"
    with pytest.raises(ConfigError, match="known presets"):
        _source_transform(load_config("quick", overrides={"degrade": "blurry"}), train=False)
