"""One medtune process at a time on a sweep's results folder.

A sweep (`tune.sweep.run_sweep` and `resume_sweep`, so `medtune sweep` new, `--overwrite` or
`--resume`) and `medtune export` hold an exclusive lock on `<parent>/.<name>.lock` while they
run. A second one on the same sweep is refused with one
line naming the first (its command, pid and start), before it writes anything: without it, a
`--resume` of a sweep still running started a second driver on the same experiment state (its
trials ran twice, both drivers rewrote the state), `--overwrite` deleted a running sweep's
folder, and two exports wrote the same `export/`. The lock is `flock(2)`: the kernel releases
it when its holder exits, Ctrl-C and SIGKILL included, so a lock is never left stale. It sits
beside the folder, not in it, as `--overwrite` deletes and recreates the folder, and is
deleted when released (a SIGKILLed holder leaves the file, unlocked, for the next to take).

Readers (`medtune dashboard`, `report`, `generate`, `serve`) take no lock; the dashboard
asks `holder` whether a process still works on a sweep that has not written its summary: if
none does, its driver is gone (killed, or its machine restarted) and the page says so.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tune.errors import UserError

__all__ = ["holder", "lock_path", "refuse_if_held", "sweep_lock"]

# `holder` takes a shared lock for an instant; a sweep starting then tries again this often.
_TRIES, _PAUSE_S = 10, 0.02


def lock_path(results: Path) -> Path:
    results = Path(results).resolve()
    return results.parent / f".{results.name}.lock"


@contextmanager
def sweep_lock(results: Path, command: str) -> Iterator[None]:
    """Hold the lock on `results` (a sweep's folder, existing or not) while the block runs,
    or raise `UserError` naming the process that holds it. `command`: what this process is,
    for the message another one gets (e.g. "medtune sweep --resume")."""
    path = lock_path(results)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _locked(path, results)
    except OSError as e:  # read-only or not ours: one line, as for any path we cannot use
        raise UserError(
            f"{Path(results)}: cannot create its lock file {path} ({e.strerror}); this "
            "command writes into the sweep's folder: run it where that folder is writable"
        ) from None
    try:
        os.ftruncate(fd, 0)  # a killed holder's line may still be there
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"{command} (pid {os.getpid()}, since {since})".encode(), 0)
        yield
    finally:
        # Deleted while still held, so that nothing is left beside the sweep; a process that
        # opened the file before the delete finds, once it holds the lock, that the name no
        # longer leads to it, and starts again (`_locked`).
        path.unlink(missing_ok=True)
        os.close(fd)


def _locked(path: Path, results: Path) -> int:
    """An open descriptor of the lock file at `path`, locked; or UserError naming the holder."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _flock_soon(fd)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip()
            os.close(fd)
            raise _busy(results, holder or "another medtune process") from None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass  # deleted by the holder that just let go: lock the new one
        os.close(fd)


def _busy(results: Path, holder: str) -> UserError:
    return UserError(
        f"{Path(results)}: {holder} is working on this sweep; wait for it to end, or stop it "
        "(Ctrl-C in its terminal), then run this again"
    )


def refuse_if_held(results: Path) -> None:
    """Raise what `sweep_lock` would if a process holds the lock now: a command's answer
    before it loads torch and Ray (the lock itself is taken where the work starts)."""
    running = holder(results)
    if running:
        raise _busy(results, running)


def holder(results: Path) -> str | None:
    """What holds the lock on `results` now ("medtune sweep (pid 12, since ...)"), or None."""
    try:
        fd = os.open(lock_path(results), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # dropped at once, by the close below
        return None
    except BlockingIOError:
        return os.pread(fd, 512, 0).decode(errors="replace").strip() or "a medtune process"
    finally:
        os.close(fd)


def _flock_soon(fd: int) -> None:
    """The exclusive lock, tried a few times over 0.2 s: past a `holder` probe's instant,
    never long enough to wait for a real holder."""
    for attempt in range(_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == _TRIES - 1:
                raise
            time.sleep(_PAUSE_S)
