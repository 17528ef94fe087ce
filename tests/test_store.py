"""Atomic result files, status markers and the cell lock."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrpose_bench import store
from lrpose_bench.errors import UserError
from lrpose_bench.store import (
    atomic_write,
    cell_lock,
    read_status,
    remove_stale_temp_files,
    write_json,
    write_npz,
    write_status,
    write_text,
)

REPO = Path(__file__).resolve().parent.parent


def temps(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------ atomic writes
def test_atomic_write_replaces_content_with_normal_permissions(tmp_path):
    target = tmp_path / "deep" / "metrics.json"
    write_json(target, {"AP": 0.5, "bad": float("nan"), "arr": np.arange(3), "n": np.int64(4)})
    assert json.loads(target.read_text()) == {"AP": 0.5, "bad": None, "arr": [0, 1, 2], "n": 4}
    write_json(target, {"AP": 0.75})
    assert json.loads(target.read_text()) == {"AP": 0.75}
    umask = os.umask(0o022)
    os.umask(umask)
    # what open(path, "w") would give, not mkstemp's private 0600
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert temps(target.parent) == []


def test_writer_exception_keeps_old_file_and_no_temp(tmp_path):
    target = tmp_path / "predictions.json"
    write_text(target, "old")

    def half_then_crash(handle):
        handle.write("new but incomp")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(target, half_then_crash, mode="w")
    assert target.read_text() == "old"
    assert temps(tmp_path) == []


@pytest.mark.parametrize(
    "code, message",
    [
        (errno.ENOSPC, "disk full while writing"),
        (errno.EDQUOT, "disk full while writing"),
        (errno.EACCES, "permission denied; choose a writable --out folder"),
        (errno.EROFS, "permission denied"),
        (errno.EIO, "cannot write"),
    ],
)
def test_os_errors_during_fsync_become_one_line(tmp_path, monkeypatch, code, message):
    target = tmp_path / "checkpoint.pt"
    write_npz(target, a=np.ones(3))
    before = target.read_bytes()

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(UserError) as info:
        write_npz(target, a=np.zeros(1000))
    text = str(info.value)
    assert message in text and str(target) in text and len(text.splitlines()) == 1
    assert target.read_bytes() == before  # the previous version is kept
    assert temps(tmp_path) == []


def test_disk_full_from_the_writer_itself(tmp_path):
    """A real ENOSPC: a writer that copies to /dev/full fails the same way."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    target = tmp_path / "a.bin"

    def to_dev_full(handle):
        with open("/dev/full", "wb") as full:
            full.write(b"x" * 100_000)
            full.flush()

    with pytest.raises(UserError, match="disk full"):
        atomic_write(target, to_dev_full)
    assert not target.exists() and temps(tmp_path) == []


def test_folder_in_the_way_is_one_line(tmp_path):
    (tmp_path / "metrics.json").mkdir()  # a folder where the file should go
    with pytest.raises(UserError, match=r"cannot write .*metrics.json"):
        write_json(tmp_path / "metrics.json", {})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"cannot write .*file/sub/x.json"):
        write_json(blocker / "sub" / "x.json", {})
    assert temps(tmp_path) == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.binary(max_size=2000), new=st.binary(max_size=2000), crash_at=st.integers(-1, 2000))
def test_file_is_always_old_or_new(tmp_path, old, new, crash_at):
    """Property: whatever point the writer dies at, the target holds exactly old or exactly new."""
    target = tmp_path / "result.bin"
    atomic_write(target, lambda f: f.write(old))

    def writer(handle):
        if 0 <= crash_at <= len(new):
            handle.write(new[:crash_at])
            raise KeyboardInterrupt
        handle.write(new)

    try:
        atomic_write(target, writer)
    except KeyboardInterrupt:
        assert target.read_bytes() == old
    else:
        assert target.read_bytes() == new
    assert temps(tmp_path) == []


def test_sigkill_between_write_and_rename_keeps_previous_file(tmp_path):
    """A process killed after fsync, before rename: the old file is intact, a temp is left behind,
    and :func:`remove_stale_temp_files` (called under the cell lock) removes just that."""
    target = tmp_path / "metrics.json"
    write_json(target, {"AP": 0.25})
    (tmp_path / ".lock").write_text("{}")
    (tmp_path / "notes.tmp").write_text("a user's file, not ours")
    script = textwrap.dedent(f"""
        import os, signal
        from lrpose_bench.store import write_json
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        write_json({str(target)!r}, {{"AP": 0.99}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(target.read_text()) == {"AP": 0.25}
    (stale,) = [p for p in temps(tmp_path) if p.name.startswith(".metrics.json.")]
    assert json.loads(stale.read_text()) == {"AP": 0.99}  # complete, just never renamed
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "metrics.json", "notes.tmp"]


# ------------------------------------------------------------------------------ status marker
def test_status_marker_round_trip(tmp_path):
    assert read_status(tmp_path) == {"state": "missing"}
    write_status(tmp_path, "running")
    assert read_status(tmp_path)["state"] == "running" and read_status(tmp_path)["pid"] == os.getpid()
    write_status(tmp_path, "failed", reason="non-finite loss (nan) at epoch 2, iteration 3")
    status = read_status(tmp_path)
    assert status["state"] == "failed" and "epoch 2, iteration 3" in status["reason"]
    (tmp_path / store.STATUS_FILE).write_text('{"state": "compl')  # e.g. written by hand, truncated
    assert read_status(tmp_path) == {"state": "unknown"}


# ------------------------------------------------------------------------------------ lock
HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from lrpose_bench.store import cell_lock
    with cell_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(120)
""")


@pytest.fixture()
def locked_by_other_process(tmp_path):
    """A cell folder whose lock is held by a live second process."""
    cell = tmp_path / "hrnet__hrnet-w8__64x48__s0"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(cell)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield cell, proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=60)


def test_second_run_cell_on_locked_folder_is_refused(locked_by_other_process):
    from lrpose_bench.config import load_config
    from lrpose_bench.engine.cell import CellSpec, run_cell
    from lrpose_bench.resolution import Resolution

    cell, pid = locked_by_other_process
    spec = CellSpec("hrnet", "hrnet-w8", Resolution(64, 48), 0)
    assert spec.cell_id == cell.name
    cfg = load_config("quick")
    with pytest.raises(UserError) as info:
        # the lock is taken before any data is touched, so no data bundle is needed to be refused
        run_cell(spec, cfg, bundle=None, out_dir=cell.parent, progress=False)  # type: ignore[arg-type]
    text = str(info.value)
    assert f"cell folder {cell} is in use by another process (pid {pid} on {socket.gethostname()})" in text
    assert "wait for it, or delete" in text
    assert read_status(cell) == {"state": "missing"}  # the refused process wrote nothing
    assert sorted(p.name for p in cell.iterdir()) == [".lock"]


def test_second_cli_run_on_locked_folder_exits_2(locked_by_other_process, tmp_path, capsys):
    from _train_child import make_coco_layout
    from lrpose_bench.cli import main

    cell, pid = locked_by_other_process
    coco = make_coco_layout(tmp_path / "coco", train_images=2, val_images=1)
    code = main(
        [
            "train",
            "--method",
            "hrnet",
            "--res",
            "64x48",
            "--backbone",
            "hrnet-w8",
            "--data",
            "coco",
            "--coco-root",
            str(coco),
            "--out",
            str(cell.parent),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("lrpose-bench: error: cell folder") and f"in use by another process (pid {pid}" in err
    assert len(err.strip().splitlines()) == 1


def test_stale_lock_of_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with cell_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_lock_of_another_host_is_respected_and_released_on_error(tmp_path):
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": 1, "host": "other-machine"}))
    with pytest.raises(UserError, match="pid 1 on other-machine"):
        with cell_lock(tmp_path):
            pass
    assert lock.exists()  # never stolen from a process we cannot see
    lock.unlink()
    with pytest.raises(ValueError):
        with cell_lock(tmp_path):
            raise ValueError("inside")
    assert not lock.exists()  # released even when the cell raised
