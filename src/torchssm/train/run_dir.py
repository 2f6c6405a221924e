"""Claiming a run directory for writing: one run per directory, and a lock while it writes.

* :func:`check_run_dir` (read-only, before any work): a directory that already holds files is
  refused unless the run resumes into it (``--resume``) or replaces it (``--overwrite``), so a
  second run cannot silently mix its metrics and checkpoints with the first one's.
* :func:`claim_run_dir` (when the run starts, after the config, task, model and resume state are
  known to be good, so a bad config leaves no empty directory behind): creates the directory,
  takes ``<run>/.lock``, checks again under the lock, and for ``--overwrite`` removes the previous
  run's files (:data:`torchssm.runs.RUN_FILES`, nothing else).
* The lock is an advisory ``flock`` on ``<run>/.lock``, which holds the writer's pid, host and
  start time. The kernel drops it when the process dies, however it dies, so a lock file left by
  a killed run is stale by construction: the next run takes it over and says whose it was. A live
  holder makes the second run stop with one line naming it. (Without ``fcntl``, e.g. on Windows,
  the file is created exclusively and a holder whose pid no longer runs on this host is stale.)
* :class:`RunWriteError`: a write into the run directory failed (full disk, read-only file
  system); the message is one line and the last complete checkpoint is untouched (checkpoints are
  written atomically, :mod:`torchssm.train.checkpoint`).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from torchssm.runs import LOCK_FILE, RUN_FILES

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]  # (no fcntl on Windows: callers test for None)


class RunDirBusy(RuntimeError):
    """Another live process holds the run directory's lock."""


class RunWriteError(OSError):
    """Writing into the run directory failed (disk full, read-only, ...): one line naming the cause."""

    def __init__(self, out_dir: Path, err: OSError):
        what = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
        super().__init__(
            err.errno, f"cannot write to the run directory {out_dir} ({what}); its last complete checkpoint is kept"
        )

    def __str__(self) -> str:
        return str(self.strerror)  # always set by __init__


def run_files(out_dir: Path) -> list:
    """The entries of ``out_dir`` other than its lock file (sorted names; [] when it does not exist)."""
    if not out_dir.is_dir():
        return []
    return sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_FILE)


def same_dir(a: Path | None, b: Path) -> bool:
    """Whether two paths name the same existing directory (symlinks and relative paths resolved)."""
    try:
        return a is not None and os.path.samefile(a, b)
    except OSError:
        return False


def check_run_dir(out_dir: Path, *, resuming_here: bool, overwrite: bool) -> None:
    """Refuse a run directory that holds another run's files (see the module docstring)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"the run directory {out_dir} is a file; choose another --out-dir")
    if overwrite and resuming_here:
        raise ValueError(
            f"--overwrite would delete the checkpoint being resumed (it is in {out_dir}); "
            f"use one of --resume and --overwrite, or resume into another --out-dir"
        )
    if resuming_here or overwrite:
        return
    order = {name: i for i, name in enumerate(RUN_FILES)}  # a run's own files first
    found = sorted(run_files(out_dir), key=lambda name: (order.get(name, len(order)), name))
    if found:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ValueError(
            f"the run directory {out_dir} is not empty ({shown}); continue that run with --resume, "
            f"replace it with --overwrite, or choose another --out-dir"
        )


def _holder(info: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"])) if "started" in info else "?"
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')} (started {started})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunDirLock:
    """``<out_dir>/.lock`` held for the life of a run (see the module docstring)."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_FILE
        self.stale: dict | None = None  # the previous holder when its lock was taken over
        self._fd: int | None = None

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunDirLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        if fcntl is None:
            self._acquire_exclusive(me)
        else:
            self._acquire_flock(me)
        return self

    def _acquire_flock(self, me: dict) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RunDirBusy(
                    f"the run directory {self.path.parent} is in use by {_holder(self._read())}; "
                    f"wait for that run to end or choose another --out-dir"
                ) from None
            try:  # the previous holder may have removed the file between our open and flock: lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._read()
        if previous:
            self.stale = previous  # unlocked, so its process is gone
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(me).encode())
        self._fd = fd

    def _acquire_exclusive(self, me: dict) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                previous = self._read()
                alive = previous.get("host") != me["host"] or _pid_alive(int(previous.get("pid", -1)))
                if alive and previous:
                    raise RunDirBusy(
                        f"the run directory {self.path.parent} is in use by {_holder(previous)}; wait "
                        f"for that run to end, or delete {self.path} if it is gone"
                    ) from None
                self.stale = previous
                self.path.unlink(missing_ok=True)
                continue
            os.write(fd, json.dumps(me).encode())
            self._fd = fd
            return
        raise RunDirBusy(f"could not take the lock {self.path}")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # before unlocking, so no one locks a file that is going away
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _remove_previous_run(out_dir: Path) -> None:
    for name in RUN_FILES:
        p = out_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
    for stale in out_dir.glob(".*.tmp-*"):  # temporary directories of killed checkpoint saves
        shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def claim_run_dir(
    out_dir: Path, *, resuming_here: bool, overwrite: bool, log: Callable[[str], None] = print
) -> Iterator[RunDirLock]:
    """Create ``out_dir``, hold its lock for the ``with`` block, clear it for ``overwrite``.

    OS errors (a read-only parent, a full disk) become :class:`RunWriteError`.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = RunDirLock(out_dir).acquire()
    except OSError as err:
        raise RunWriteError(out_dir, err) from err
    try:
        if lock.stale:
            log(f"taking over the lock of a run that is no longer running ({_holder(lock.stale)})")
        check_run_dir(out_dir, resuming_here=resuming_here, overwrite=overwrite)  # again, under the lock
        if overwrite:
            try:
                _remove_previous_run(out_dir)
            except OSError as err:
                raise RunWriteError(out_dir, err) from err
        yield lock
    finally:
        lock.release()
