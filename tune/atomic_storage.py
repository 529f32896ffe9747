"""Tune's experiment folder copied to a local `run.storage` whole, and only what changed.

Tune writes its experiment state (`experiment_state-*.json`, the searcher's state, each
trial's `result.json` and `progress.csv`) to a staging folder on the driver and copies the
whole folder to storage at every save, in place, with pyarrow's `copy_files`: a driver killed
during that copy left the files it was writing truncated or empty, and `--resume` then read
the newest, empty state. `copy_changed_files` writes each file under a hidden temporary name
in its own folder and renames it over the old one (atomic on a POSIX filesystem, NFS
included), so a kill leaves the previous copy; and it copies only the files whose size or
modification time differ from the copy's, which it sets to the source's (rsync's quick
check), so a save no longer rewrites every finished trial's logs.
`tune.controller.copy_state_atomically` has Tune use it for local storage. Object stores (S3,
GCS) keep Tune's own copy: an object appears only when its upload completes.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from pathlib import Path

__all__ = ["PART_SUFFIX", "copy_changed_files", "remove_partial_files"]

# Temporary files are named `.<name>.<pid>-<thread>-<n>.part`: hidden, unique per writer.
PART_SUFFIX = ".part"
_written = itertools.count()


def copy_changed_files(source: str, target: str) -> int:
    """Copy the files under `source` to `target` that are not already there with the same
    size and modification time, each atomically; return how many were copied.

    Files only in `target` stay (as with Tune's copy). A source file that changes while it is
    copied keeps its newer modification time, so the next call copies it again."""
    copied = 0
    for folder, _, names in os.walk(source):
        into = os.path.join(target, os.path.relpath(folder, source))
        os.makedirs(into, exist_ok=True)
        for name in names:
            src, dst = os.path.join(folder, name), os.path.join(into, name)
            try:
                stat = os.stat(src)  # before the copy: a later change makes the copy stale
            except FileNotFoundError:  # gone since the listing: nothing to copy
                continue
            if _same(stat, dst):
                continue
            part = _part_name(dst)
            try:
                shutil.copyfile(src, part)
            except FileNotFoundError:
                if os.path.exists(src):  # the target's folder is gone: not for us to hide
                    raise
                Path(part).unlink(missing_ok=True)  # the source went mid-copy
                continue
            os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            os.replace(part, dst)
            copied += 1
    return copied


def remove_partial_files(root: Path) -> int:
    """Delete the temporary files that copies killed mid-file left under `root` (only when
    nothing writes there: `--resume` does it before it starts); return how many."""
    parts = [p for p in root.rglob(f".*{PART_SUFFIX}") if p.is_file()]
    for part in parts:
        part.unlink()
    return len(parts)


def _same(stat: os.stat_result, path: str) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    return there.st_size == stat.st_size and there.st_mtime_ns == stat.st_mtime_ns


def _part_name(path: str) -> str:
    head, name = os.path.split(path)
    unique = f"{os.getpid()}-{threading.get_ident()}-{next(_written)}"
    return os.path.join(head, f".{name}.{unique}{PART_SUFFIX}")
