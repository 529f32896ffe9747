"""A trial's scratch folder: where the Trainer writes each checkpoint before Ray Tune copies it
to the sweep's storage.

A trial removes its folder when it ends, but a process that is killed (the driver or a node
SIGKILLed, a worker lost) cannot, and its last checkpoint (adapter, optimizer and scheduler
state: MBs for SmolLM2, GBs for a large model at a high LoRA rank) stays in the temporary
directory for good. So each trial holds an exclusive `flock` on a file in its folder for as
long as it runs, and on start removes every medtune scratch folder whose lock nobody holds:
the kernel drops a lock when its process dies, however it dies, so a folder is never taken
from a trial that still runs (not even one in another container sharing the directory, where
a PID check would be wrong). The folders live in `tempfile.gettempdir()`: `TMPDIR` of the
Ray worker, which inherits it from where Ray was started.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PREFIX", "remove_abandoned", "trial_scratch"]

PREFIX = "medtune-trial-"
_NEW = ".medtune-new-"
_LOCK = ".medtune-lock"
# A scratch folder without a lock file was left by a medtune from before the locks; one
# younger than this may still be in use by such a medtune (it rewrites its checkpoints at
# every evaluation, so its folder's time moves while it runs).
_UNLOCKED_AGE_S = 24 * 3600


@contextmanager
def trial_scratch(label: str, root: str | Path | None = None) -> Iterator[Path]:
    """A new scratch folder `<root>/medtune-trial-<label>-<random>`, locked while in use and
    removed after; first removes the folders of trials that died without removing theirs."""
    remove_abandoned(root)
    # Made and locked under a name no clean-up looks at, then renamed (atomic): no other
    # trial ever sees this folder without its lock held.
    new = Path(tempfile.mkdtemp(prefix=_NEW, dir=root))
    with (new / _LOCK).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        work = new.with_name(f"{PREFIX}{label}-{new.name.removeprefix(_NEW)}")
        new.rename(work)
        try:
            yield work
        finally:
            # Removed while still locked, so no clean-up elsewhere races this one.
            shutil.rmtree(work, ignore_errors=True)


def remove_abandoned(root: str | Path | None = None) -> list[Path]:
    """Remove the scratch folders under `root` (default: the temporary directory) that no
    live process holds; return them. Folders of other users are skipped."""
    return [
        folder
        for folder in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*")
        if _remove_if_abandoned(folder)
    ]


def _remove_if_abandoned(folder: Path) -> bool:
    try:
        lock = (folder / _LOCK).open("r")
    except FileNotFoundError:
        try:
            old = time.time() - folder.stat().st_mtime > _UNLOCKED_AGE_S
        except OSError:
            return False  # gone meanwhile
        if old:
            shutil.rmtree(folder, ignore_errors=True)
        return old
    except OSError:
        return False  # another user's, or not a folder
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a running trial's
        shutil.rmtree(folder, ignore_errors=True)
        return True
