"""Run folders and atomic writes.

Every result file is written to a temporary file in the same folder, fsynced, then renamed over the
target, so a crash never leaves a half-written metrics/predictions/checkpoint file. A cell folder
carries ``status.json`` (running / complete / failed with reason) and a lock file that refuses a
second process working on the same cell.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from lrpose_bench.errors import UserError


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: mode of new result files: what ``open(path, "w")`` would give (``mkstemp`` alone gives 0600)
_FILE_MODE = 0o666 & ~_current_umask()

#: temp files of :func:`atomic_write` are ``.<name>.<random>.tmp`` in the target's folder
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


class _RecordingFile:
    """The file handed to an :func:`atomic_write` writer: it remembers the first ``OSError`` a
    ``write`` raised and counts what was written.

    ``torch.save`` into a file object swallows the ``OSError`` of a full disk and raises its own
    ``RuntimeError`` ("[enforce fail at inline_container.cc] unexpected pos ..."); the recorded
    error lets :func:`atomic_write` report the real cause. Everything else is the real handle's."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.error: OSError | None = None
        self.written = 0

    def write(self, data: Any) -> Any:
        try:
            count = self._handle.write(data)
        except OSError as error:
            if self.error is None:
                self.error = error
            raise
        self.written += len(data)
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _megabytes_to_free(path: Path, written: int, size_hint: int | None = None) -> int:
    """How many MB to free so that writing ``path`` again fits: its expected size (the writer's
    ``size_hint``, the previous version's size, or what was written before the disk filled, the
    largest), with a 10% margin, less the space free now (the temp file is gone); at least 1."""
    try:
        previous = path.stat().st_size
    except OSError:
        previous = 0
    expected = max(previous, written, size_hint or 0) * 1.1
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = 0
    needed = expected - free if expected > free else expected
    return max(1, math.ceil(needed / 2**20))


def atomic_write(
    path: Path | str, writer: Callable[[Any], None], mode: str = "wb", *, size_hint: int | None = None
) -> None:
    """Write through ``writer(file)`` into a temp file, fsync, and rename onto ``path``.

    A crash at any point leaves either the previous file or the new one, never a mix; a process
    killed before the rename leaves a stale ``.<name>.*.tmp`` (see :func:`remove_stale_temp_files`).
    Every ``OSError`` (full disk, quota, permissions, a folder in the way) becomes one
    :class:`UserError` line naming the file; the temp file is removed and the old file is kept.
    That includes an ``OSError`` a writer swallowed and replaced by its own error (``torch.save``).
    ``size_hint`` (bytes the file will take, when the caller knows) sizes the "free N MB" advice.
    """
    path = Path(path)
    tmp_name: str | None = None
    recorder: _RecordingFile | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        try:
            os.fchmod(fd, _FILE_MODE)
        except OSError:  # e.g. a file system without permissions; the content is what matters
            pass
        with os.fdopen(fd, mode) as handle:
            recorder = _RecordingFile(handle)
            try:
                writer(recorder)
            except OSError:
                raise
            except Exception as error:
                if recorder.error is not None:  # the writer hid the real cause
                    raise recorder.error from error
                raise
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        _fsync_dir(path.parent)
    except OSError as error:
        if tmp_name is not None:
            _remove_quietly(tmp_name)
        reason = error.strerror or str(error) or type(error).__name__
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            needed = _megabytes_to_free(path, recorder.written if recorder is not None else 0, size_hint)
            raise UserError(
                f"disk full while writing {path}; the previous version of the file is kept: free {needed} MB and rerun"
            ) from error
        if error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise UserError(f"cannot write {path}: permission denied; choose a writable --out folder") from error
        raise UserError(f"cannot write {path}: {reason}; the previous version of the file is kept") from error
    except BaseException:
        if tmp_name is not None:
            _remove_quietly(tmp_name)
        raise


def remove_stale_temp_files(folder: Path | str) -> list[Path]:
    """Delete temp files that a killed :func:`atomic_write` left in ``folder``; return them.

    Call it only while holding the folder's :func:`cell_lock`: then no live writer owns them.
    (A SIGKILL between write and rename cannot run any clean-up; a w32 checkpoint is ~110 MB.)
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and name.count(".") >= 3 and entry.is_file():
            try:
                entry.unlink()
            except OSError:
                continue
            removed.append(entry)
    return removed


def _remove_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def _default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _sanitise(value: Any) -> Any:
    """NaN/inf → null, so the file is strict JSON (a missing metric stays missing)."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.floating) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _sanitise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_sanitise(v) for v in value]
    return value


def write_json(path: Path | str, data: Any) -> None:
    """Atomic JSON write (sorted keys, numpy-aware, NaN written as null)."""
    text = json.dumps(_sanitise(data), indent=2, sort_keys=True, default=_default, allow_nan=False)
    atomic_write(path, lambda f: f.write(text), mode="w")


def write_text(path: Path | str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text), mode="w")


def write_npz(path: Path | str, **arrays: np.ndarray) -> None:
    """Atomic compressed numpy archive."""
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def ensure_writable_folder(folder: Path) -> Path:
    """Create ``folder`` or raise one clear line when it cannot be written."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"output folder {folder} is not writable ({error.strerror}); pass a writable folder with --out"
        ) from None
    return folder


def first_missing_folder(folder: Path | str) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (``None`` when it does):
    what :func:`remove_empty_folders` may take away again if the run fails before writing anything."""
    folder = Path(folder).expanduser().absolute()
    missing = None
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        missing = candidate
    return missing


def remove_empty_folders(root: Path | str) -> None:
    """Remove ``root`` and the folders under it, bottom-up, as long as they hold no files: a run
    that failed before training leaves no empty folders behind (a folder with any file stays)."""
    root = Path(root)
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass
    try:
        root.rmdir()
    except OSError:
        pass


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------- status
STATUS_FILE = "status.json"


def write_status(cell_dir: Path, state: str, reason: str | None = None, **extra: Any) -> None:
    data = {"state": state, "time": now(), "host": socket.gethostname(), "pid": os.getpid()}
    if reason:
        data["reason"] = reason
    data.update(extra)
    write_json(Path(cell_dir) / STATUS_FILE, data)


def read_status(cell_dir: Path) -> dict[str, Any]:
    path = Path(cell_dir) / STATUS_FILE
    if not path.is_file():
        return {"state": "missing"}
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return {"state": "unknown"}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def cell_lock(cell_dir: Path) -> Iterator[None]:
    """Exclusive lock on a cell folder; a stale lock from a dead process on this host is taken over."""
    cell_dir = Path(cell_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    lock = cell_dir / ".lock"
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = json.loads(lock.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                owner = {}
            same_host = owner.get("host") == socket.gethostname()
            if same_host and isinstance(owner.get("pid"), int) and not _pid_alive(owner["pid"]):
                lock.unlink(missing_ok=True)
                continue
            raise UserError(
                f"cell folder {cell_dir} is in use by another process (pid {owner.get('pid')} on "
                f"{owner.get('host')}); wait for it, or delete {lock} if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(record)
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
