"""``lrpose-bench bench`` end to end on a tiny SynthPose, and the accelerate helpers' CPU fallbacks."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from lrpose_bench.cli import main
from lrpose_bench.commands.bench import median_seconds
from lrpose_bench.engine.accelerate import TrainStep, adam_for, configure_backends, maybe_compile


def test_bench_writes_every_measurement(tmp_path, capsys):
    out = tmp_path / "run" / "bench.json"
    code = main(
        [
            "bench",
            "--res",
            "32x24,64x48",
            "--methods",
            "hrnet,cal",
            "--batch-size",
            "4",
            "--steps",
            "1",
            "--eval-instances",
            "4",
            "--backbone",
            "hrnet-w8",
            "--device",
            "cpu",
            "--no-progress",
            "--set",
            f"data.cache_dir={tmp_path / 'cache'}",
            "--set",
            "data.synth.num_train_images=12",
            "--set",
            "data.synth.num_val_images=4",
            "--set",
            "data.synth.num_tune_images=1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "step_fast_img_s" in printed and "crop store 32x24,64x48" in printed
    data = json.loads(out.read_text())
    assert data["device"] == "cpu" and data["backbone"] == "hrnet-w8" and data["batch_size"] == 4
    assert [(r["res"], r["method"]) for r in data["rows"]] == [
        ("32x24", "hrnet"),
        ("32x24", "cal"),
        ("64x48", "hrnet"),
        ("64x48", "cal"),
    ]
    for row in data["rows"]:
        for key in (
            "model_img_s",
            "step_cpu_img_s",
            "step_fast_img_s",
            "data_cpu_img_s",
            "data_fast_img_s",
            "eval_img_s",
        ):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert row["fast_vs_cpu_step"] == pytest.approx(row["step_fast_img_s"] / row["step_cpu_img_s"])
        assert row["step_cpu_vs_model"] == pytest.approx(row["step_cpu_img_s"] / row["model_img_s"])
        assert (row["mgm_share"] is not None) == (row["method"] == "cal")
    assert all(r["mgm_share"] > 0 for r in data["rows"] if r["method"] == "cal")
    # the recipe table: the old CPU path and the default, side by side, with their ratio
    assert "Training recipes side by side" in printed and "default_vs_reference_cpu" in printed
    recipes = data["recipes"]
    assert set(recipes["definitions"]) == {"reference_cpu", "default", "default_nchw"}
    assert [(r["res"], r["method"]) for r in recipes["rows"]] == [(r["res"], r["method"]) for r in data["rows"]]
    for row in recipes["rows"]:
        ratio = row["default_img_s"] / row["reference_cpu_img_s"]
        assert math.isfinite(ratio) and row["default_vs_reference_cpu"] == pytest.approx(ratio)
    old = recipes["measured"]["reference_cpu"][0]
    assert (old["pipeline"], old["precision"], old["channels_last"], old["fused_adam"]) == (
        "reference",
        "fp32",
        False,
        False,
    )
    assert {m["pipeline"] for m in recipes["measured"]["default"]} == {"crop_store"}
    # the default less NHWC: channels_last's own share of the speed-up, and nothing else changed
    nchw, default = recipes["measured"]["default_nchw"][0], recipes["measured"]["default"][0]
    assert (nchw["channels_last"], default["channels_last"]) == (False, True)
    assert (nchw["pipeline"], nchw["precision"], nchw["fused_adam"]) == (
        default["pipeline"],
        default["precision"],
        default["fused_adam"],
    )
    (store,) = data["crop_stores"].values()
    assert store["built_now"] and store["crop_size"][0] > 64
    assert "torch" in json.dumps(data["environment"])


def test_bench_rejects_bad_options(capsys):
    assert main(["bench", "--steps", "0"]) != 0
    assert "--steps" in capsys.readouterr().err
    assert main(["bench", "--methods", "nosuch", "--steps", "1"]) != 0


def test_median_seconds_runs_warmup_and_steps():
    calls = []
    value = median_seconds(lambda: calls.append(1), 3, torch.device("cpu"), warmup=2)
    assert len(calls) == 5 and value >= 0


def _tiny():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)
    )
    batch = {"image": torch.randn(3, 3, 8, 6), "target": torch.randn(3, 2, 8, 6)}
    return model, batch


def test_compile_flag_off_is_identity_and_on_keeps_outputs():
    model, batch = _tiny()
    assert maybe_compile(model, False) is model
    compiled = maybe_compile(model, True, backend="eager")  # the backend that needs no compiler
    model.eval()
    torch.testing.assert_close(compiled(batch["image"]), model(batch["image"]))
    configure_backends(torch.device("cpu"), deterministic=False)  # no-op on a CPU


def test_graphed_step_falls_back_to_the_eager_step_on_cpu():
    model, batch = _tiny()
    reference = copy.deepcopy(model)

    def loss_fn(outputs, b):
        loss = (outputs - b["target"]).pow(2).mean()
        return {"loss": loss, "mse": loss}

    step = TrainStep(
        model,
        adam_for(model, 1e-2, 0.0, torch.device("cpu"), graphed=True),
        loss_fn,
        device=torch.device("cpu"),
        graphed=True,
    )
    assert not step.graphed
    # the fused kernel adam_for uses on a CPU (the per-parameter loop differs in the last bits, which
    # Adam amplifies on this net's conv bias before BN, whose true gradient is 0)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2, fused=True)
    for _ in range(3):
        losses = step.step(batch)
        ref_opt.zero_grad()
        ref_loss = (reference(batch["image"]) - batch["target"]).pow(2).mean()
        ref_loss.backward()
        ref_opt.step()
        torch.testing.assert_close(losses["loss"], ref_loss.detach())
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b)
    step.set_lr(0.5)
    assert step.optimizer.param_groups[0]["lr"] == 0.5


def test_coco_val_scoring_estimate_scores_a_coco_sized_document():
    """The scoring half of the COCO val estimate runs the real rescoring, OKS-NMS and COCOeval on a
    document shaped like COCO val; small here, and perturbed ground truth must score high but < 1."""
    from lrpose_bench.commands.bench import coco_val_estimate, synthetic_coco_val
    from lrpose_bench.config import load_config
    from lrpose_bench.evaluation.coco_metric import build_results, evaluate_keypoints

    gt, arrays = synthetic_coco_val(seed=1, instances=120, images=80)
    assert len(gt["annotations"]) == 120 and len(gt["images"]) == 80
    cfg = load_config("quick")
    ap = evaluate_keypoints(gt, build_results(*arrays, cfg.eval.kpt_score_threshold, cfg.eval.oks_nms_threshold))["AP"]
    assert 0.3 < ap < 1.0
    estimate = coco_val_estimate([{"eval_img_s": 500.0}, {"eval_img_s": 1000.0}], cfg)
    assert estimate["instances"] == 6352 and estimate["eval_img_s"] == 500.0
    assert estimate["network_s"] == pytest.approx(6352 / 500.0)
    assert estimate["total_s"] == pytest.approx(estimate["network_s"] + estimate["scoring_s"])
    assert 0.3 < estimate["sanity_ap"] < 1.0
