"""SimCC (``methods/simcc``): labels, arg-max/soft decode, flip of the 1-D vectors, KL loss, head."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrpose_bench.config import resolve_method_params
from lrpose_bench.errors import ConfigError
from lrpose_bench.keypoints import flip_index
from lrpose_bench.method import Method, MethodContext, TrainingStage
from lrpose_bench.methods.simcc.codec import encode_simcc, flip_vectors, kl_discrete_loss
from lrpose_bench.methods.simcc.method import SimccMethod
from lrpose_bench.models import MethodHeadModel, build_method_model
from lrpose_bench.oracle import oracle_outputs
from lrpose_bench.resolution import Resolution

K = 17
TRAIN = TrainingStage("train", 1)
RESOLUTIONS = ("64x48", "128x96", "256x192")


def build(res: str = "64x48", **ablation) -> SimccMethod:
    resolution = Resolution.parse(res)
    return SimccMethod(
        resolve_method_params(SimccMethod.Params, "simcc", resolution, ablation or None), MethodContext(resolution)
    )


def input_to_heatmap(method: SimccMethod, xy_in: np.ndarray) -> np.ndarray:
    return (xy_in * method.scale).astype(np.float32)


# ------------------------------------------------------------------------------------ labels
def test_constants_and_bins_follow_the_yaml() -> None:
    m = build("64x48")
    # 64x48 sigma: the 2026-12-06 tune-split sweep (configs/methods/simcc.yaml)
    assert m.params.split_ratio == 2.0 and m.params.sigma == 3.0 and m.params.decode == "argmax"
    assert (m.x_bins, m.y_bins) == (96, 128)  # k·w, k·h
    assert build("256x192").params.sigma == 6.0  # mmpose SimCC 256x192
    assert (build("64x48", split_ratio=3).x_bins, build("64x48", split_ratio=1).y_bins) == (144, 64)


def test_gaussian_label_matches_mmpose_formula() -> None:
    """Label = exp(-(i - round(b))² / 2σ²) / (σ√2π) around the rounded bin (mmpose SimCCLabel)."""
    m = build("64x48")
    joint_in = np.array([[10.3, 20.8]], np.float32)
    x, y, w = encode_simcc(input_to_heatmap(m, joint_in), np.ones(1), (64, 48), (16, 12), 2.0, 1.5, True, True)
    assert w.tolist() == [1.0]
    bins = (joint_in / 1.0 + 0.5) * 2 - 0.5  # input px → centred bins
    mu = np.round(bins)[0]
    expected_x = np.exp(-((np.arange(96) - mu[0]) ** 2) / (2 * 1.5**2)) / (1.5 * math.sqrt(2 * math.pi))
    np.testing.assert_allclose(x[0], expected_x, rtol=2e-5, atol=1e-7)
    assert int(y[0].argmax()) == int(mu[1])


def test_one_hot_labels_without_smoothing_and_weights() -> None:
    m = build("64x48", label_smoothing=False)
    joints = np.array([[3.2, 4.1], [-5.0, 4.0], [np.nan, 1.0], [2.0, 2.0]], np.float32)
    enc = m.encode(joints, np.array([1, 1, 1, 0], np.float32))
    np.testing.assert_array_equal(enc["weight"], [1, 0, 0, 0])  # off-vector, non-finite, unlabelled
    assert enc["simcc_x"][0].sum() == 1.0 and enc["simcc_x"][0].max() == 1.0
    assert np.abs(enc["simcc_x"][1:]).sum() == 0 and np.abs(enc["simcc_y"][1:]).sum() == 0


def test_fractional_bins_are_refused() -> None:
    with pytest.raises(ConfigError, match="whole number of bins"):
        build("64x48", split_ratio=2.01)
    with pytest.raises(ConfigError, match="decode"):
        build("64x48", decode="mean")


# ---------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("smoothing", [True, False])
def test_argmax_round_trip_is_within_half_a_bin(res: str, k: int, smoothing: bool) -> None:
    """encode → perfect logits → arg-max decode: error ≤ 1/(2k) input px per axis (hypothesis)."""
    m = build(res, split_ratio=k, label_smoothing=smoothing)
    height, width = m.context.input_size

    @settings(max_examples=40, deadline=None)
    # anywhere on the input's pixel extent [-0.5, w-0.5] (1/100 px inside it: float32 rounding of the
    # very edge may push the bin one past the last)
    @given(st.lists(st.tuples(st.floats(-0.49, width - 0.51), st.floats(-0.49, height - 0.51)), min_size=1, max_size=K))
    def check(points: list[tuple[float, float]]) -> None:
        joints_in = np.array(points, np.float32)
        joints = input_to_heatmap(m, joints_in)[None]
        visible = np.ones(joints.shape[:2], np.float32)
        coords, scores = m.decode(oracle_outputs(m, joints, visible))
        error_in = (coords[0].numpy() - joints[0]) / m.scale  # back to input px
        assert np.abs(error_in).max() <= 0.5 / k + 1e-4
        np.testing.assert_allclose(scores.numpy(), 1.0, atol=1e-4)  # a perfect prediction scores 1

    check()


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_soft_decode_of_an_untruncated_label_is_the_label_centre(res: str) -> None:
    """Soft decode = softmax expectation: on a label whose Gaussian lies inside the vector it is the
    (rounded) label centre, so it also stays within 1/(2k) input px."""
    m = build(res, decode="soft")
    sigma_in = m.params.sigma / m.params.split_ratio
    height, width = m.context.input_size
    rng = np.random.default_rng(1)
    margin = 5 * sigma_in + 1
    joints_in = np.stack(
        [rng.uniform(margin, width - 1 - margin, (3, K)), rng.uniform(margin, height - 1 - margin, (3, K))], -1
    ).astype(np.float32)
    joints = input_to_heatmap(m, joints_in)
    coords, _ = m.decode(oracle_outputs(m, joints, np.ones((3, K), np.float32)))
    error_in = (coords.numpy() - joints) / m.scale
    assert np.abs(error_in).max() <= 0.5 / m.params.split_ratio + 1e-3
    coarse = m.coarse_argmax(oracle_outputs(m, joints, np.ones((3, K), np.float32)))
    np.testing.assert_allclose(coarse.numpy(), coords.numpy(), atol=2e-3)


def test_soft_decode_is_the_softmax_expectation() -> None:
    m = build("64x48", decode="soft")
    logits = torch.randn(2, K, m.x_bins + m.y_bins)
    coords, scores = m.decode(logits)
    px = torch.softmax(logits[..., : m.x_bins], -1)
    bins = (px * torch.arange(m.x_bins)).sum(-1)
    torch.testing.assert_close(coords[..., 0], ((bins + 0.5) / 2.0 - 0.5) * float(m.scale[0]))
    py = torch.softmax(logits[..., m.x_bins :], -1)
    expected = (torch.minimum(px.amax(-1), py.amax(-1)) * m.peak_mass).clamp(max=1)
    torch.testing.assert_close(scores, expected)  # min of the two normalised maxima


# ---------------------------------------------------------------------------------- flip
@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_flip_of_the_vectors_is_the_encoding_of_the_flipped_input(res: str, k: int) -> None:
    """flip_outputs(encode(mirrored joints)) == encode(joints): reversing the x vector is the exact
    mirror x → W-1-x under the centred bin grid (joints off the rounding ties)."""
    m = build(res, split_ratio=k)
    fi = flip_index(K)

    @settings(max_examples=30, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.integers(0, m.x_bins - 1), st.floats(-0.4, 0.4), st.integers(0, m.y_bins - 1), st.floats(-0.4, 0.4)
            ),
            min_size=K,
            max_size=K,
        )
    )
    def check(cells: list[tuple[int, float, int, float]]) -> None:
        bins = np.array([[bx + fx, by + fy] for bx, fx, by, fy in cells], np.float64)
        joints_in = (bins + 0.5) / k - 0.5
        joints = (joints_in * m.scale).astype(np.float32)
        mirrored = joints[fi].copy()
        mirrored[:, 0] = m.context.heatmap_size[1] - 1 - mirrored[:, 0]
        visible = np.ones(K, np.float32)
        original = m.encode(joints, visible)
        flipped = m.encode(mirrored, visible)
        packed = torch.from_numpy(np.concatenate([flipped["simcc_x"], flipped["simcc_y"]], -1))[None]
        back = m.flip_outputs(packed, torch.as_tensor(fi))[0].numpy()
        np.testing.assert_allclose(back[:, : m.x_bins], original["simcc_x"], atol=1e-6)
        np.testing.assert_allclose(back[:, m.x_bins :], original["simcc_y"], atol=1e-6)

    check()


def test_flip_vectors_reverses_x_and_swaps_joints_only() -> None:
    out = torch.arange(2 * K * 7, dtype=torch.float32).reshape(2, K, 7)
    fi = torch.as_tensor(flip_index(K))
    flipped = flip_vectors(out, 3, fi)
    torch.testing.assert_close(flipped[:, :, :3], out[:, fi, :3].flip(-1))
    torch.testing.assert_close(flipped[:, :, 3:], out[:, fi, 3:])
    torch.testing.assert_close(flip_vectors(flipped, 3, fi), out)  # an involution


# ---------------------------------------------------------------------------------- loss
def test_kl_loss_matches_a_direct_computation() -> None:
    """mmpose KLDiscretLoss: Σ_n Σ_k w · mean_bins[label · (log label − log softmax)] over x and y, / K."""
    m = build("64x48")
    rng = np.random.default_rng(3)
    joints = np.stack([rng.uniform(0, 11, (2, K)), rng.uniform(0, 15, (2, K))], -1).astype(np.float32)
    visible = (rng.random((2, K)) > 0.2).astype(np.float32)
    batch = Method.encode_batch(m, torch.from_numpy(joints), torch.from_numpy(visible))
    logits = torch.randn(2, K, m.x_bins + m.y_bins, generator=torch.Generator().manual_seed(0))
    got = m.loss(logits, batch, TRAIN)["loss"]
    total = 0.0
    for key, part in (("simcc_x", logits[..., : m.x_bins]), ("simcc_y", logits[..., m.x_bins :])):
        lab = batch[key].double().numpy()
        logp = torch.log_softmax(part.double(), -1).numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(lab > 0, lab * (np.log(lab) - logp), 0.0).mean(-1)
        total += (kl * batch["weight"].numpy()).sum()
    assert got.item() == pytest.approx(total / K, rel=1e-5)
    assert kl_discrete_loss(logits[..., : m.x_bins], batch["simcc_x"], torch.zeros(2, K)).item() == 0.0


def test_minimising_the_loss_over_free_logits_recovers_the_joint() -> None:
    m = build("64x48")
    joints = torch.tensor([[[4.3, 9.6]] * K])
    batch = m.encode_batch(joints, torch.ones(1, K))
    logits = torch.zeros(1, K, m.x_bins + m.y_bins, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.5)
    for _ in range(150):
        opt.zero_grad()
        m.loss(logits, batch, TRAIN)["loss"].backward()
        opt.step()
    coords, _ = m.decode(logits.detach())
    assert (coords - joints).abs().max() <= 0.5 / 2 * float(m.scale.max()) + 1e-4


# ---------------------------------------------------------------------------------- head
def test_head_flattens_each_map_into_two_linears_on_the_backbone() -> None:
    torch.manual_seed(0)
    m = build("64x48")
    model = build_method_model("hrnet-w8", m)
    assert isinstance(model, MethodHeadModel)
    assert model.head.mlp_head_x.in_features == 16 * 12 and model.head.mlp_head_x.out_features == 96
    assert model.head.mlp_head_y.out_features == 128
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 48))
        maps = model.backbone(torch.randn(1, 3, 64, 48))
    assert out.shape == (2, K, 96 + 128) and maps.shape == (1, K, 16, 12)
    assert any(k.startswith("head.mlp_head_x") for k in model.state_dict())
    coords, scores = m.decode(out)
    assert coords.shape == (2, K, 2) and scores.shape == (2, K)
    assert float(scores.min()) >= 0 and float(scores.max()) <= 1


# --------------------------------------------------------------------------- paper reference
def test_competitors_published_numbers_sit_in_their_own_table(tmp_path) -> None:
    """The SimCC README / mmpose numbers are published numbers: loaded and validated by the reference
    loader, shown beside a row of ours only at the same input size, else in their own table (never in
    a measured column)."""
    from test_report_factory import CellSpec, make_run

    from lrpose_bench.report import tables as tbl
    from lrpose_bench.report.paper_reference import load_reference
    from lrpose_bench.report.run_folder import load_run

    ref = load_reference()
    assert ref.paper_method("simcc", "hrnet-w32") == "SimCC" and ref.paper_method("integral", "hrnet-w8") == "IPR"
    simcc = {e.input: e for e in ref.entries if e.method == "SimCC"}
    assert simcc["64x64"].metrics["AP"] == 56.4 and simcc["128x128"].metrics["AP"] == 70.7
    assert all("COCO val, det boxes" in e.source for e in simcc.values())
    assert ref.lookup("rle", "simplebaseline-r50", "256x192")["COCO val2017"][0].metrics["AP"] == 70.4
    assert {e.method: e.metrics["AP"] for e in ref.entries if e.input == "256x256"} == {
        "IPR": 63.3,
        "DSNT": 67.4,
        "Debias-IPR": 67.5,
    }
    run = load_run(
        make_run(tmp_path, [CellSpec("simcc"), CellSpec("rle"), CellSpec("integral"), CellSpec("hrnet")], num_images=6)
    )
    table = tbl.published_elsewhere_table(run, ref)
    assert table is not None
    frame = table.flat()
    assert {"Ours", "Published method", "Input"} <= set(frame.columns)
    assert not any(c.startswith("Ours —") for c in frame.columns)  # no measured column
    shown = {(r["Ours"], r["Published method"], r["Input"]) for _, r in frame.iterrows()}
    assert {
        ("simcc", "SimCC", "64×64"),
        ("simcc", "SimCC", "128×128"),
        ("integral", "IPR", "256×256"),
        ("integral", "DSNT", "256×256"),
        ("integral", "Debias-IPR", "256×256"),
        ("hrnet", "HRNet", "64×64"),
    } <= shown
    main = {t.key: t for t in tbl.main_tables(run, ref)}["main_64x48"]
    assert set(main.values[("", "Method")]) == {"simcc", "rle", "integral", "hrnet"}


def test_oracle_rows_exist_for_the_competitors(tmp_path) -> None:
    """``lrpose-bench oracle`` scores SimCC, RLE and integral: each decodes its own perfect output."""
    from conftest import make_coco_fixture
    from lrpose_bench.commands.oracle import oracle_rows
    from lrpose_bench.config import load_config

    make_coco_fixture(tmp_path, num_images=3, persons_per_image=2, seed=4)
    cfg = load_config(
        "quick",
        overrides={
            "data.source": "coco",
            "data.coco_root": str(tmp_path),
            "data.train_annotations": "annotations.json",
            "data.val_annotations": "annotations.json",
            "data.train_images": "images",
            "data.val_images": "images",
        },
    )
    rows = oracle_rows(cfg, ["simcc", "rle", "integral"], [Resolution(64, 48), Resolution(128, 96)], progress=False)
    assert [(r["method"], r["resolution"]) for r in rows] == [
        ("simcc", "64x48"),
        ("rle", "64x48"),
        ("integral", "64x48"),
        ("simcc", "128x96"),
        ("rle", "128x96"),
        ("integral", "128x96"),
    ]
    for row in rows:
        assert row["AP"] > 0.99, row
        limit = 0.5 / 2 * 0.25 * np.sqrt(2) + 1e-3 if row["method"] == "simcc" else 1e-3  # ≤ 1/(2k) input px per axis
        assert row["max_error_hm_px"] <= limit, row
