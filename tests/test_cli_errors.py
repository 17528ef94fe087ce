"""Bad input on the command line: one clear line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lrpose_bench.cli import main
from lrpose_bench.errors import UserError


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--methods", "nosuch", "--res", "64x48"], "unknown method 'nosuch'; known methods:"),
        (
            ["run", "--methods", "hrnet", "--res", "64x48", "--backbone", "resnet-9000"],
            "unknown backbone 'resnet-9000'",
        ),
        (["run", "--methods", "hrnet", "--res", "64by48"], "malformed resolution '64by48'"),
        (["run", "--methods", "hrnet", "--res", "66x48"], "must be positive multiples of 4"),
        # a 1-pixel heatmap side: the unbiased transform's unit length is zero; it used to train,
        # fail every cell with "non-finite loss" and still write a report
        (["run", "--methods", "hrnet", "--res", "64x4"], "resolution '64x4' gives a 16x1 heatmap"),
        (["run", "--methods", "hrnet", "--res", "4x48"], "at least 8 input pixels"),
        (["run", "--methods", "hrnet", "--profile", "turbo"], "unknown profile 'turbo'"),
        (["run", "--methods", "hrnet", "--set", "train.lr=fast"], "config key train.lr: expected float, got 'fast'"),
        (["run", "--methods", "hrnet", "--set", "train.nonsense=1"], "unknown config key 'train.nonsense'"),
        (
            ["run", "--methods", "hrnet", "--ablation", "colour=blue"],
            "unknown ablation key 'colour' for method 'hrnet'",
        ),
        # it used to name a config override and suggest train.epochs=5, which --ablation refuses
        (["run", "--methods", "cal", "--ablation", "binary"], "--ablation 'binary' must look like KEY=VALUE"),
        (["run", "--methods", "hrnet", "--data", "coco"], "--data coco needs --coco-root"),
        (["run", "--methods", "hrnet", "--data", "imagenet"], "unknown dataset 'imagenet'"),
    ],
)
def test_bad_input_gives_one_line(args, message, capsys, tmp_path):
    code, err = run_cli(args + ["--out", str(tmp_path / "out"), "--no-progress"], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_missing_annotation_file(capsys, tmp_path):
    (tmp_path / "coco").mkdir()
    code, err = run_cli(
        [
            "run",
            "--methods",
            "hrnet",
            "--data",
            "coco",
            "--coco-root",
            str(tmp_path / "coco"),
            "--out",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 2 and "person_keypoints_train2017.json not found" in err


def test_corrupt_config_yaml(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: [1,\n")
    code, err = run_cli(["run", "--methods", "hrnet", "--config", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "is not valid YAML" in err


def test_config_yaml_wrong_type_names_key(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: many\n")
    code, err = run_cli(["run", "--methods", "hrnet", "--config", str(bad), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "config key train.epochs: expected int, got 'many'" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; checked with a file in place of the folder")
def test_unwritable_output_folder_permissions(capsys, tmp_path):  # pragma: no cover - not root
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = run_cli(["run", "--methods", "hrnet", "--out", str(locked / "x")], capsys)
    assert code == 2 and "not writable" in err


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    code, err = run_cli(["run", "--methods", "hrnet", "--out", str(blocker / "sub"), "--no-progress"], capsys)
    assert code == 2 and "is not writable" in err and "--out" in err


def test_subprocess_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lrpose_bench", "run", "--methods", "bogus", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("lrpose-bench: error: unknown method 'bogus'")
    assert "Traceback" not in proc.stderr


def test_help_explains_every_subcommand_with_example(capsys):
    for command in ("run", "train", "evaluate", "data", "models", "methods"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "example" in out.lower()


def test_a_failing_report_after_a_run_is_one_line_and_keeps_the_cells(tmp_path, capsys, monkeypatch):
    """The report is built after every cell is saved: its failure names the error and how to
    rebuild, with no traceback (it was a traceback at the end of a standard run, 2026-12-07)."""
    from _train_child import make_coco_layout

    def broken_report(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("lrpose_bench.report.build.build_report", broken_report)
    coco = make_coco_layout(tmp_path / "coco", train_images=4, val_images=2)
    out = tmp_path / "out"
    args = [
        "run", "--methods", "hrnet", "--res", "64x48", "--data", "coco", "--coco-root", str(coco),
        "--out", str(out), "--backbone", "hrnet-w8", "--no-progress",
        "--set", "train.epochs=1", "--set", "train.batch_size=4", "--set", "train.device=cpu",
        "--set", "train.snapshot_fractions=[1.0]",
    ]  # fmt: skip
    code, err = run_cli(args, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"the cells are saved in {out}" in err and "RuntimeError: boom" in err
    assert f"lrpose-bench report {out}" in err
    assert (out / "hrnet__hrnet-w8__64x48__s0" / "metrics.json").is_file()
    with pytest.raises(UserError) as raised:
        main([*args, "--debug", "--force"])
    assert isinstance(raised.value.__cause__, RuntimeError)
