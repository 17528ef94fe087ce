"""The bad inputs that skipped validation, one parametrised test per class.

Each class of bad input gets its own test: detection files (1), numbers out of range (2), devices
(3), corrupt run folders (5), a full disk (6), duplicates and ignored options (7), messages that
pointed the wrong way (8). Every case asserts the exit status, the one line that names the culprit
and that no traceback was printed. The CLI runs in-process (``lrpose_bench.cli.main``); the cases
that need a trained cell copy one trained once per module (one epoch on a 3-image COCO folder).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from _train_child import TINY_TRAINING, annotation_path, load_doc, make_coco_layout, save_doc
from lrpose_bench import __version__
from lrpose_bench.cli import main
from lrpose_bench.engine.cell import CellSpec
from lrpose_bench.resolution import Resolution
from lrpose_bench.store import read_status

CELL = CellSpec("hrnet", "hrnet-w8", Resolution(64, 48), 0).cell_id
FAST = list(TINY_TRAINING)


def one_line(text: str) -> str:
    """The single line of ``text`` (asserting there is exactly one and no traceback)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@dataclass
class World:
    tmp: Path
    coco: Path
    out: Path

    def args(self, *extra: str, command: str = "train") -> list[str]:
        which = ["--method", "hrnet"] if command == "train" else ["--methods", "hrnet"]
        return [
            command,
            *which,
            "--res",
            "64x48",
            "--data",
            "coco",
            "--coco-root",
            str(self.coco),
            "--out",
            str(self.out),
            *FAST,
            *extra,
        ]

    def boxes(self, detections: Any, raw: str | None = None) -> str:
        path = self.tmp / "dets.json"
        path.write_text(raw if raw is not None else json.dumps(detections))
        return str(path)


@pytest.fixture()
def world(tmp_path) -> World:
    coco = make_coco_layout(tmp_path / "coco", train_images=3, val_images=2)
    return World(tmp_path, coco, tmp_path / "out")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(COCO folder, run folder with one complete hrnet cell), trained once for the module."""
    root = tmp_path_factory.mktemp("trained")
    coco = make_coco_layout(root / "coco", train_images=3, val_images=2)
    out = root / "run"
    assert (
        main(
            [
                "run",
                "--methods",
                "hrnet",
                "--res",
                "64x48",
                "--data",
                "coco",
                "--coco-root",
                str(coco),
                "--out",
                str(out),
                "--no-report",
                *FAST,
            ]
        )
        == 0
    )
    assert read_status(out / CELL)["state"] == "complete"
    return coco, out


def copy_run(trained: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    coco, run = trained
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return coco, target


def rerun_args(coco: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--methods",
        "hrnet",
        "--res",
        "64x48",
        "--data",
        "coco",
        "--coco-root",
        str(coco),
        "--out",
        str(out),
        "--no-report",
        *FAST,
        *extra,
    ]


# ============================================================== 1. detection (person-box) files
DET = {"image_id": 1, "category_id": 1, "bbox": [10.0, 10.0, 30.0, 60.0], "score": 0.9}


def det(**change: Any) -> list[dict[str, Any]]:
    entry = {**DET, **change}
    return [dict(DET), {k: v for k, v in entry.items() if v is not ...}]


DETECTION_CASES = [
    ("bbox-has-a-string", det(bbox=[1, 2, "x", 4]), None, "entry 1: 'bbox' must be 4 finite numbers"),
    ("bbox-three-numbers", det(bbox=[1, 2, 3]), None, "entry 1: 'bbox' must be 4 finite numbers"),
    ("bbox-null", det(bbox=None), None, "entry 1: 'bbox' must be 4 finite numbers [x, y, w, h], got None"),
    (
        "bbox-nan",
        None,
        '[{"image_id": 1, "bbox": [1, 2, NaN, 40], "score": 0.9}]',
        "entry 0: 'bbox' must be 4 finite numbers [x, y, w, h], got [1, 2, nan, 40]",
    ),
    (
        "bbox-infinity",
        None,
        '[{"image_id": 1, "bbox": [1, 2, 30, Infinity], "score": 0.9}]',
        "entry 0: 'bbox' must be 4 finite numbers",
    ),
    ("score-a-string", det(score="high"), None, "entry 1: 'score' must be a finite number, got 'high'"),
    (
        "score-nan",
        None,
        '[{"image_id": 1, "bbox": [1, 2, 30, 40], "score": NaN}]',
        "entry 0: 'score' must be a finite number, got nan",
    ),
    ("score-missing", det(score=...), None, "entry 1 needs image_id, bbox and score (missing score)"),
    ("image-id-a-string", det(image_id="1"), None, "entry 1: 'image_id' must be an integer image id, got '1'"),
    ("category-a-string", det(category_id="person"), None, "entry 1: 'category_id' must be an integer"),
    ("entry-not-an-object", [DET, [1, 2, 30, 60]], None, "entry 1 is list, not an object"),
    ("empty-list", [], None, "holds no detections (an empty list)"),
    ("every-box-below-threshold", [{**DET, "score": 0.1}], None, "no usable person boxes for"),
]


@pytest.mark.parametrize(
    "detections, raw, expected", [c[1:] for c in DETECTION_CASES], ids=[c[0] for c in DETECTION_CASES]
)
def test_detection_file_entries_are_validated(world, capsys, detections, raw, expected):
    """Detections are validated like annotations: the person-box file, the entry index and the
    field are named (not the annotation file, and no traceback)."""
    boxes = world.boxes(detections, raw)
    code, _, err = run_main(world.args("--person-boxes", boxes, "--set", "data.box_score_threshold=0.5"), capsys)
    line = one_line(err)
    assert code == 2
    assert line.startswith(f"lrpose-bench: error: person-box file {boxes}"), line
    assert expected in line, line
    assert not world.out.exists()  # failed before training: no empty folder left behind


# =================================================================== 2. numbers out of range
RANGE_CASES = [
    ("train.batch_size=0", "config key train.batch_size: expected an int >= 1, got 0"),
    ("eval.batch_size=0", "config key eval.batch_size: expected an int >= 1, got 0"),
    ("train.lr=-1", "config key train.lr: expected a number > 0, got -1.0"),
    ("train.lr=.nan", "config key train.lr: expected a number > 0, got nan"),
    ("train.epochs=0", "config key train.epochs: expected an int >= 1, got 0"),
    ("augment.flip_prob=1.5", "config key augment.flip_prob: expected a probability in [0, 1], got 1.5"),
    ("augment.rotation_prob=-0.1", "config key augment.rotation_prob: expected a probability in [0, 1]"),
    ("augment.scale_factor=1.0", "config key augment.scale_factor: expected a number in [0, 1), got 1.0"),
    ("data.synth.occlusion_prob=2", "config key data.synth.occlusion_prob: expected a probability in [0, 1]"),
    ("eval.oks_nms_threshold=1.5", "config key eval.oks_nms_threshold: expected a number in [0, 1], got 1.5"),
    ("data.max_train_instances=0", "config key data.max_train_instances: expected an int >= 1, got 0"),
    ("data.max_val_instances=-2", "config key data.max_val_instances: expected an int >= 1, got -2"),
    ("data.box_padding=0", "config key data.box_padding: expected a number > 0, got 0.0"),
    ("train.lr_gamma=0", "config key train.lr_gamma: expected a number in (0, 1], got 0.0"),
    ("train.num_workers=-1", "config key train.num_workers: expected an int >= 0, got -1"),
    ("train.lr_milestones=[5,-1]", "config key train.lr_milestones: expected every element to be an int >= 1"),
    ("report.displacement_bins=[0,2,1]", "config key report.displacement_bins: expected strictly increasing"),
    ("seed=-1", "config key seed: expected an int in [0, 4294967295], got -1"),
    ("data.pipeline=fast", "config key data.pipeline: expected one of auto, reference, crop_store, got 'fast'"),
    ("report.formats=[html,pdf]", "config key report.formats: expected one of html, latex, csv, json, got 'pdf'"),
]


@pytest.mark.parametrize("override, expected", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_numbers_out_of_range_are_refused_when_the_config_loads(tmp_path, capsys, override, expected):
    """Checked once, from the schema, before any work: the COCO folder does not even exist (its
    error would come later), and no output folder is created."""
    out = tmp_path / "out"
    code, _, err = run_main(
        [
            "run",
            "--methods",
            "hrnet",
            "--data",
            "coco",
            "--coco-root",
            str(tmp_path / "none"),
            "--out",
            str(out),
            "--no-progress",
            "--set",
            override,
        ],
        capsys,
    )
    line = one_line(err)
    assert (
        code == 2 and line == f"lrpose-bench: error: {expected}" or line.startswith(f"lrpose-bench: error: {expected}")
    ), line
    assert not out.exists()


def test_out_of_range_values_in_a_config_file_and_in_seeds(tmp_path, capsys):
    config = tmp_path / "my.yaml"
    config.write_text("train:\n  epochs: 0\n")
    code, _, err = run_main(
        ["run", "--methods", "hrnet", "--config", str(config), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "config key train.epochs: expected an int >= 1, got 0" in one_line(err)
    code, _, err = run_main(["run", "--methods", "hrnet", "--seeds", "0,-4", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--seeds 0,-4: expected an int in [0, 4294967295], got -4" in one_line(err)
    assert not (tmp_path / "o").exists()


def test_every_numeric_key_of_the_schema_has_a_range_and_the_defaults_satisfy_it():
    import dataclasses

    from lrpose_bench.commands.docs_reference import _section_class, schema_fields
    from lrpose_bench.config import BenchConfig, check_rules, field_rule, load_config

    for dotted, tp, _ in schema_fields(BenchConfig):
        text = str(tp)
        if "int" in text or "float" in text:
            section, _, name = dotted.rpartition(".")
            assert field_rule(_section_class(section), name) is not None, f"{dotted} has no range"
    check_rules(BenchConfig())
    for profile in ("quick", "paper"):
        check_rules(load_config(profile))
    assert dataclasses.is_dataclass(BenchConfig)


# ================================================================================ 3. devices
CUDA = torch.cuda.is_available()
GPUS = torch.cuda.device_count() if CUDA else 0
DEVICE_CASES = [
    (
        "device-tpu",
        ["--device", "tpu"],
        "config key train.device: expected one of auto, cpu, cuda, mps, cuda:N, got 'tpu'",
        True,
    ),
    ("set-device-gpu", ["--set", "train.device=gpu"], "config key train.device: expected one of", True),
    (
        "device-cuda-without-cuda",
        ["--device", "cuda"],
        "train.device 'cuda' (--device): no CUDA GPU is usable",
        not CUDA,
    ),
    (
        "device-cuda-index-too-high",
        ["--device", "cuda:7"],
        "no CUDA GPU is usable" if not CUDA else "CUDA GPU(s) are visible",
        GPUS < 8,
    ),
    ("gpus-minus-one", ["--gpus", "-1"], "--gpus -1: expected a number of GPUs >= 1", True),
    ("gpus-zero", ["--gpus", "0"], "--gpus 0: expected a number of GPUs >= 1", True),
    ("gpus-two-without-cuda", ["--gpus", "2"], "--gpus 2: no CUDA GPU is usable on this machine", not CUDA),
    ("gpus-two-with-device-cpu", ["--gpus", "2", "--device", "cpu"], "--gpus 2 with --device cpu", True),
    ("gpus-more-than-visible", ["--gpus", "64"], "--gpus 64", GPUS < 64),
]


@pytest.mark.parametrize("extra, expected, applies", [c[1:] for c in DEVICE_CASES], ids=[c[0] for c in DEVICE_CASES])
def test_devices_that_cannot_run_are_refused(tmp_path, capsys, monkeypatch, extra, expected, applies):
    if not applies:
        pytest.skip("this machine has the device")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)

    def no_launch(*args, **kwargs):  # a --gpus N accepted by mistake must not start N processes here
        raise AssertionError(f"torchrun would have been started: {args}")

    monkeypatch.setattr(subprocess, "call", no_launch)
    out = tmp_path / "out"  # the COCO folder does not exist: a device accepted by mistake fails fast on it
    args = [
        "run",
        "--methods",
        "hrnet",
        "--out",
        str(out),
        "--no-progress",
        "--backbone",
        "hrnet-w8",
        "--data",
        "coco",
        "--coco-root",
        str(tmp_path / "none"),
        *extra,
    ]
    code, _, err = run_main(args, capsys)
    line = one_line(err)
    assert code == 2 and expected in line, line
    assert not out.exists()


def test_evaluate_on_a_device_this_machine_lacks(trained, tmp_path, capsys):
    _, run = copy_run(trained, tmp_path)
    code, _, err = run_main(["evaluate", "--checkpoint", str(run / CELL), "--device", "tpu", "--no-progress"], capsys)
    assert code == 2 and "train.device 'tpu' (--device) is not a device" in one_line(err)


def test_several_processes_are_recorded_in_run_json_the_table_and_the_report(trained, tmp_path, capsys, monkeypatch):
    """World size and global batch are recorded whenever more than one process trains (here rank
    0 of a pretended world of 2, on a folder whose cell is complete, so nothing trains)."""
    from lrpose_bench import cli
    from lrpose_bench.engine import distributed
    from lrpose_bench.report.build import _summary, settings_of
    from lrpose_bench.report.run_folder import load_run

    coco, run = copy_run(trained, tmp_path)
    monkeypatch.setattr(distributed, "context", lambda: distributed.DistContext(0, 2, 0, None))
    monkeypatch.setattr(cli, "_init_distributed", lambda cfg: None)
    code, out, err = run_main(rerun_args(coco, run), capsys)
    assert code == 0, err
    assert "trained on 2 processes: batch 4 each, global batch 8" in out
    record = json.loads((run / "run.json").read_text())
    assert record["processes"] == {"world_size": 2, "batch_per_process": 4, "global_batch": 8}
    data = load_run(run)
    rows = dict(_summary(data, settings_of(data)))
    assert rows["Processes"] == "2 (DistributedDataParallel), batch 4 each, global batch 8"


# ===================================================================== 5. corrupt run folders
def _corrupt_json(cell: Path) -> None:
    (cell / "metrics.json").write_text('{"metrics": {"AP": 0.1')


def _json_list(cell: Path) -> None:
    (cell / "metrics.json").write_text("[1, 2, 3]")


def _empty_file(cell: Path) -> None:
    (cell / "metrics.json").write_text("")


def _not_utf8(cell: Path) -> None:
    (cell / "metrics.json").write_bytes(b"\xff\xfe\x00garbage")


def _deleted(cell: Path) -> None:
    (cell / "metrics.json").unlink()


def _predictions_cut(cell: Path) -> None:
    text = (cell / "predictions.json").read_text()
    (cell / "predictions.json").write_text(text[: len(text) // 2])


def _predictions_deleted(cell: Path) -> None:
    (cell / "predictions.json").unlink()


CORRUPT_CASES = [
    ("metrics-truncated", _corrupt_json, "its metrics.json is corrupt"),
    ("metrics-a-list", _json_list, "its metrics.json is corrupt (it holds no 'metrics' object)"),
    ("metrics-empty", _empty_file, "its metrics.json is corrupt"),
    ("metrics-not-utf8", _not_utf8, "its metrics.json is corrupt"),
    ("metrics-deleted", _deleted, "its metrics.json is missing"),
    # a complete cell used to be skipped with predictions the report's bootstrap cannot read
    ("predictions-cut", _predictions_cut, "its predictions.json is corrupt"),
    ("predictions-deleted", _predictions_deleted, "its predictions.json is missing"),
]


@pytest.mark.parametrize("damage, expected", [c[1:] for c in CORRUPT_CASES], ids=[c[0] for c in CORRUPT_CASES])
def test_complete_cell_with_corrupt_metrics_is_re_evaluated(trained, tmp_path, capsys, damage, expected):
    """No crash on every rerun until --force: the cell is re-evaluated from its checkpoint and
    one line says so."""
    coco, run = copy_run(trained, tmp_path)
    cell = run / CELL
    before = (cell / "checkpoint.pt").read_bytes()
    damage(cell)
    code, out, err = run_main(rerun_args(coco, run), capsys)
    assert code == 0 and "Traceback" not in err + out, err
    said = [line for line in out.splitlines() if "is marked complete but" in line]
    assert len(said) == 1 and expected in said[0] and "re-evaluating it from its checkpoint" in said[0], out
    assert CELL in said[0]
    info = json.loads((cell / "metrics.json").read_text())
    assert "AP" in info["metrics"] and read_status(cell)["state"] == "complete"
    assert isinstance(json.loads((cell / "predictions.json").read_text()), list)
    assert (cell / "checkpoint.pt").read_bytes() == before  # not retrained
    # the training time is the training's, from the epoch log, not the re-evaluating process's ~0 s
    # (it was, and the budget table's CPU-minutes of every re-evaluated cell read zero)
    logged = list(csv.DictReader((cell / "train_log.csv").open()))
    assert info["timing"]["train_s"] == pytest.approx(sum(float(r["seconds"]) for r in logged), abs=0.01)
    assert info["timing"]["train_s_source"].startswith("epoch log")
    images = sum(int(r["iterations"]) for r in logged) * info["timing"]["global_batch"]
    seconds = sum(float(r["seconds"]) for r in logged)
    assert info["timing"]["train_images_per_s"] == pytest.approx(images / seconds, abs=0.05)


def test_interrupted_cell_is_recorded_interrupted_and_the_rerun_says_where_it_resumes(world, capsys, monkeypatch):
    from lrpose_bench.engine import trainer

    real_save = trainer.save_checkpoint
    calls = [0]

    def ctrl_c_on_second_save(path, payload):
        calls[0] += 1
        if calls[0] == 2:  # epoch 2 ends: Ctrl-C before its checkpoint is written
            raise KeyboardInterrupt
        real_save(path, payload)

    monkeypatch.setattr(trainer, "save_checkpoint", ctrl_c_on_second_save)
    args = world.args("--set", "train.epochs=2", "--set", "train.match_budget=false")
    code, _, err = run_main(args, capsys)
    assert code == 130
    assert one_line(err) == "lrpose-bench: interrupted; re-run the same command to resume"
    status = read_status(world.out / CELL)
    assert status["state"] == "interrupted" and "KeyboardInterrupt" not in status.get("reason", "")
    assert not (world.out / CELL / ".lock").exists()

    monkeypatch.undo()
    code, out, err = run_main(args, capsys)
    assert code == 0, err
    resumed = [line for line in out.splitlines() if "resuming" in line]
    assert len(resumed) == 1 and f"resuming {CELL} at epoch 2 of 2" in resumed[0], out
    assert read_status(world.out / CELL)["state"] == "complete"


def _bad_coco_root(w: World) -> list[str]:
    args = w.args()
    args[args.index("--coco-root") + 1] = str(w.tmp / "missing-coco")
    return args


def _truncated_annotations(w: World) -> list[str]:
    path = annotation_path(w.coco, "val")
    path.write_text(path.read_text()[:100])
    return w.args()


def _unknown_ablation(w: World) -> list[str]:
    return w.args("--ablation", "colour=blue")


def _bad_boxes(w: World) -> list[str]:
    return w.args("--person-boxes", w.boxes([{"image_id": 1, "bbox": [1, 2], "score": 1}]))


EARLY_FAILURES = [
    ("coco-root-missing", _bad_coco_root, "missing-coco does not exist"),
    ("truncated-annotations", _truncated_annotations, "is not valid JSON"),
    ("unknown-ablation", _unknown_ablation, "unknown ablation key 'colour'"),
    ("bad-person-boxes", _bad_boxes, "'bbox' must be 4 finite numbers"),
]


@pytest.mark.parametrize("setup, expected", [c[1:] for c in EARLY_FAILURES], ids=[c[0] for c in EARLY_FAILURES])
def test_runs_that_fail_before_training_leave_no_empty_folders(world, capsys, setup, expected):
    world.out = world.tmp / "fresh" / "nested" / "out"
    code, _, err = run_main(setup(world), capsys)
    assert code == 2 and expected in one_line(err)
    assert not (world.tmp / "fresh").exists()


# ======================================================================== 6. disk full
def _dev_full(monkeypatch, name: str) -> None:
    """Route the temp file of every atomic write of ``name`` to /dev/full: the kernel answers
    ENOSPC to the real writes, as on a full disk (torch.save turns that into 'unexpected pos')."""
    if not Path("/dev/full").exists() or not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /dev/full and /proc")
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        if f"/.{name}." in os.readlink(f"/proc/self/fd/{fd}"):
            os.close(fd)
            return open("/dev/full", mode)  # closed by atomic_write's with-block
        return real_fdopen(fd, mode, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)


DISK_CASES = [
    ("checkpoint-torch-save", "checkpoint.pt"),
    ("train-log-csv", "train_log.csv"),
    ("displacements-npz", "displacements.npz"),
]


@pytest.mark.parametrize("name", [c[1] for c in DISK_CASES], ids=[c[0] for c in DISK_CASES])
def test_disk_full_while_writing_a_cell_file(world, capsys, monkeypatch, name):
    _dev_full(monkeypatch, name)
    code, _, err = run_main(world.args(), capsys)
    line = one_line(err)
    target = world.out / CELL / name
    assert code == 2
    assert f"disk full while writing {target}; the previous version of the file is kept: free " in line, line
    assert line.endswith(" MB and rerun"), line
    status = read_status(world.out / CELL)
    assert status["state"] == "failed" and status["reason"].startswith("disk full while writing")
    assert "unexpected pos" not in status["reason"]
    assert [p for p in (world.out / CELL).iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()  # space freed: the same command finishes the cell
    assert main(world.args()) == 0
    assert read_status(world.out / CELL)["state"] == "complete"


@pytest.mark.parametrize("writer", ["torch", "numpy", "text"])
def test_disk_full_inside_any_writer_is_one_line_with_the_space_to_free(tmp_path, monkeypatch, writer):
    from lrpose_bench.errors import UserError
    from lrpose_bench.store import atomic_write

    _dev_full(monkeypatch, "target.bin")
    target = tmp_path / "target.bin"
    target.write_bytes(b"x" * (3 * 2**20))  # the previous version: 3 MB
    write = {
        "torch": lambda f: torch.save({"w": torch.zeros(1000)}, f),
        "numpy": lambda f: np.savez_compressed(f, a=np.random.default_rng(0).random(50_000)),
        "text": lambda f: f.write(b"y" * 100_000),
    }[writer]
    with pytest.raises(UserError) as info:
        atomic_write(target, write)
    text = str(info.value)
    assert text.startswith(f"disk full while writing {target}") and text.endswith(" MB and rerun"), text
    assert int(text.rsplit("free ", 1)[1].split()[0]) >= 1
    assert target.stat().st_size == 3 * 2**20 and [p for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


# ============================================================ 7. duplicates and ignored options
DUPLICATE_CASES = [
    ("methods-twice", ["--methods", "hrnet,hrnet"]),
    ("seeds-twice", ["--seeds", "0,0"]),
    ("methods-seeds-res-twice", ["--methods", "hrnet, hrnet", "--seeds", "0,0", "--res", "64x48,64x48"]),
]


@pytest.mark.parametrize("extra", [c[1] for c in DUPLICATE_CASES], ids=[c[0] for c in DUPLICATE_CASES])
def test_a_repeated_method_or_seed_is_one_cell(trained, tmp_path, capsys, extra):
    """As for a repeated --res: one cell in run.json, in the printed table and in cells.csv."""
    coco, run = copy_run(trained, tmp_path)
    args = [a for a in rerun_args(coco, run) if a != "--no-report"]
    if "--methods" in extra:
        at = args.index("--methods")
        del args[at : at + 2]
    if "--res" in extra:
        at = args.index("--res")
        del args[at : at + 2]
    code, out, err = run_main([*args, *extra], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert json.loads((run / "run.json").read_text())["cells"] == [CELL]
    table = [line for line in out.splitlines() if line.startswith(CELL)]
    assert len(table) == 1, out
    with open(run / "report" / "cells.csv") as handle:
        rows = [row for row in csv.DictReader(handle)]
    assert [row["cell"] for row in rows] == [CELL]


def test_a_second_run_adds_its_cells_to_run_json(trained, tmp_path, capsys):
    coco, run = copy_run(trained, tmp_path)
    record = json.loads((run / "run.json").read_text())
    started = record["started"]
    record["cells"] = ["udp__hrnet-w8__64x48__s0"]  # as if the first run had trained another method
    (run / "run.json").write_text(json.dumps(record))
    code, _, err = run_main(rerun_args(coco, run), capsys)
    assert code == 0, err
    record = json.loads((run / "run.json").read_text())
    assert record["cells"] == ["udp__hrnet-w8__64x48__s0", CELL]
    assert record["started"] == started and "updated" in record


def test_evaluate_with_another_backbone_is_refused(trained, tmp_path, capsys):
    _, run = copy_run(trained, tmp_path)
    code, _, err = run_main(["evaluate", "--checkpoint", str(run / CELL), "--backbone", "hrnet-w32"], capsys)
    line = one_line(err)
    assert code == 2
    assert f"--backbone hrnet-w32: cell {CELL} was trained with backbone 'hrnet-w8'" in line, line


#: training options ``evaluate --checkpoint`` used to list and ignore: (option, a value)
IGNORED_OPTIONS = [
    ("--profile", "paper"),
    ("--config", "my.yaml"),
    ("--set", "eval.flip_test=false"),
    ("--data", "coco"),
    ("--coco-root", "/data/coco"),
    ("--person-boxes", "dets.json"),
    ("--seed", "3"),
    ("--gpus", "2"),
]


@pytest.mark.parametrize("option, value", IGNORED_OPTIONS, ids=[o for o, _ in IGNORED_OPTIONS])
def test_evaluate_of_a_cell_refuses_training_options_instead_of_ignoring_them(capsys, option, value):
    """A cell folder holds its own configuration: an option that would change it is refused in one
    line (argparse's 'unrecognized', or the --weights-only refusal), never silently ignored."""
    try:
        code = main(["evaluate", "--checkpoint", "runs/x/cell", option, value])
    except SystemExit as exit_:
        code = exit_.code
    line = one_line(capsys.readouterr().err)
    assert code == 2 and option in line, line


def test_evaluate_help_lists_no_training_option_as_its_own(capsys):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    own = text.partition("published checkpoints (--weights)")[0]
    for option, _ in IGNORED_OPTIONS:  # at most in the --weights group, never among evaluate's own
        assert f"  {option} " not in own, option
    assert "--seed" not in text and "--gpus" not in text


# ====================================================================== 8. messages
def test_missing_pretrained_names_the_config_key(world, capsys):
    code, _, err = run_main(world.args("--set", f"model.pretrained={world.tmp / 'w8.pth'}"), capsys)
    line = one_line(err)
    assert code == 2 and "config key model.pretrained: checkpoint" in line and "w8.pth not found" in line
    assert "--set model.pretrained=FILE" in line and "--pretrained" not in line.replace("model.pretrained", "")
    assert not world.out.exists()


def test_foreign_checkpoint_points_at_model_pretrained(world, capsys):
    (world.out / CELL).mkdir(parents=True)
    torch.save({"weight": torch.zeros(3)}, world.out / CELL / "checkpoint.pt")
    code, _, err = run_main(world.args(), capsys)
    line = one_line(err)
    assert code == 2 and "is not an lrpose-bench training checkpoint" in line
    assert "model.pretrained" in line and "use --pretrained" not in line


def test_evaluate_on_a_missing_path_says_not_found(tmp_path, capsys):
    code, _, err = run_main(["evaluate", "--checkpoint", str(tmp_path / "nowhere" / "cell")], capsys)
    line = one_line(err)
    assert code == 2 and f"{tmp_path / 'nowhere' / 'cell'} not found" in line and "not a cell folder" not in line


def test_evaluate_on_a_corrupt_cell_config(trained, tmp_path, capsys):
    _, run = copy_run(trained, tmp_path)
    (run / CELL / "config.yaml").write_text("cell: [unclosed\n")
    code, _, err = run_main(["evaluate", "--checkpoint", str(run / CELL)], capsys)
    assert code == 2 and f"{run / CELL / 'config.yaml'} is corrupt" in one_line(err)


def test_warnings_are_one_line_without_the_source_line(world):
    """A subprocess: pytest records warnings itself, so only a real process shows how they print."""
    doc = load_doc(world.coco, "train")
    doc["annotations"][0]["bbox"][2] = 0.0  # a zero-area box: skipped with a warning
    save_doc(world.coco, "train", doc)
    boxes = world.boxes([{"image_id": 1, "bbox": [1, 2, 3], "score": 1}])  # fails right after the warning
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run(
        [sys.executable, "-m", "lrpose_bench", *world.args("--person-boxes", boxes)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    err = proc.stderr
    lines = err.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2 and "Traceback" not in err, err
    assert lines[0].startswith("lrpose-bench: warning: ") and "skipped 1 annotation(s) with zero-area boxes" in lines[0]
    assert "warnings.warn" not in err and ".py:" not in err
    assert lines[1].startswith("lrpose-bench: error: person-box file")


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"lrpose-bench {__version__}"


# ============================================================================== the count
def test_at_least_thirty_distinct_bad_inputs():
    ids = (
        [c[0] for c in DETECTION_CASES]
        + [c[0] for c in RANGE_CASES]
        + [c[0] for c in DEVICE_CASES]
        + [c[0] for c in CORRUPT_CASES]
        + [c[0] for c in EARLY_FAILURES]
        + [c[0] for c in DISK_CASES]
        + [c[0] for c in DUPLICATE_CASES]
        + [o for o, _ in IGNORED_OPTIONS]
    )
    assert len(ids) == len(set(ids)) >= 30
