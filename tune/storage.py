"""Where a sweep's results live: a local folder, or a URI that Ray's storage accepts.

A local `run.storage` holds the results folder itself. A URI (`s3://bucket/prefix`,
`gs://bucket/prefix`, `abfs://...`: what `pyarrow.fs.FileSystem.from_uri` opens; an
S3-compatible store through `?endpoint_override=host:port&scheme=http`) becomes Ray's
`storage_path`: every node uploads its trials' results and checkpoints there itself, so no
disk is shared. The driver then keeps the results folder at `run.local_dir/<name>`:
medtune's own files (also uploaded, so the URI holds the whole sweep) and a copy of Ray's
files without checkpoints, refreshed while the sweep runs (`medtune dashboard` and `report`
read it); `export` fetches the one checkpoint it needs.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow
import pyarrow.fs as pafs
from ray.tune import Callback

from trainables.config import default_cache_root
from tune.config import URI_SCHEMES, is_uri
from tune.errors import UserError
from tune.export_layout import PROMPT_FILE
from tune.redact import redact_text

__all__ = [
    "MirrorResults",
    "URI_SCHEMES",
    "copy_sweep",
    "copy_sweeps",
    "delete_run",
    "download_folder",
    "download_results",
    "find_sweep_uris",
    "follow_sweep",
    "is_sweep_uri",
    "is_uri",
    "open_storage",
    "remote_copy_dir",
    "run_exists",
    "run_uri",
    "upload",
]


def run_uri(storage: str, name: str) -> str:
    """The sweep's folder under a storage URI: `name` joined to the path, the query kept."""
    parts = urlsplit(storage)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))


def open_storage(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of `uri`, or one clear error."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowException, OSError, ValueError) as err:
        raise _unreachable(uri, err) from err


def run_exists(uri: str) -> bool:
    fs, path = open_storage(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as err:
        raise _unreachable(uri, err) from err


def _unreachable(uri: str, err: Exception) -> UserError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserError(
        f"run.storage={redact_text(uri)}: cannot open it ({reason}); check the URI, the "
        "store's address and credentials (e.g. AWS_ACCESS_KEY_ID), or use a local folder"
    )


def find_sweep_uris(uri: str) -> list[tuple[str, str]]:
    """The folders directly under `uri` that are sweeps' (they hold medtune.yaml): (folder
    name, URI) pairs, by name. One listing of `uri`, not of the sweeps' files (a bucket of
    sweeps holds every trial's checkpoints)."""
    fs, base = open_storage(uri)
    try:
        found = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        folders = sorted(i.base_name for i in found if i.type == pafs.FileType.Directory)
        configs = fs.get_file_info([f"{base}/{name}/medtune.yaml" for name in folders])
    except OSError as err:
        raise _unreachable(uri, err) from err
    if not found and not run_exists(uri):
        raise UserError(
            f"{redact_text(uri)}: nothing there; give the run.storage URI sweeps write to, "
            "or one sweep's folder under it"
        )
    return [
        (name, run_uri(uri, name))
        for name, config in zip(folders, configs, strict=True)
        if config.type == pafs.FileType.File
    ]


def delete_run(uri: str) -> None:
    fs, path = open_storage(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def upload(local: Path, uri: str, names: list[str]) -> None:
    """Copy `local/<name>` (files or folders) to `uri/<name>`."""
    fs, base = open_storage(uri)
    for name in names:
        src = local / name
        if src.exists():
            pafs.copy_files(str(src), f"{base}/{name}", destination_filesystem=fs)


def download_results(
    uri: str,
    local: Path,
    *,
    every_file: bool = False,
    export_files: tuple[str, ...] = (),
    prune: bool = False,
) -> int:
    """Ray's files under `uri` (experiment state, trial results and errors), without the
    checkpoints or an export (a model the driver uploaded from `local`), into `local`; only
    files that changed, or `every_file` (the final copy: a rewrite within the same second, at
    the same size, looks unchanged, since object stores keep whole-second modification
    times). `export_files`: names of an export's files to copy all the same (its metrics, for a
    dashboard away from the driver). `prune`: `local` only mirrors `uri` (a copy on a machine
    other than the driver's): its files no longer there are removed, e.g. a sweep's old trials
    once it was run again with --overwrite. Returns how many were copied.

    Each file lands by rename, so a dashboard reading `local` never sees half a file.
    """
    fs, base = open_storage(uri)
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    infos = [i for i in fs.get_file_info(selector) if i.type == pafs.FileType.File]
    rels = [i.path[len(base) :].lstrip("/") for i in infos]
    # An export's folder holds its prompt file: every file below such a folder is skipped.
    exports = tuple(
        rel.removesuffix(PROMPT_FILE) for rel in rels if rel.endswith(f"/{PROMPT_FILE}")
    )
    copied = 0
    for info, rel in zip(infos, rels, strict=True):
        if any(part.startswith("checkpoint_") for part in rel.split("/")):
            continue
        if rel.startswith(exports) and rel.rsplit("/", 1)[-1] not in export_files:
            continue
        dst = local / rel
        if not every_file and _unchanged(dst, info):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.part")
        with fs.open_input_stream(info.path) as src, open(tmp, "wb") as out:
            out.write(src.read())
        if info.mtime_ns is not None:  # the storage's time, so the next check compares like
            os.utime(tmp, ns=(info.mtime_ns, info.mtime_ns))
        os.replace(tmp, dst)
        copied += 1
    if prune:
        _prune(local, set(rels))
    return copied


def _prune(local: Path, present: set[str]) -> None:
    """Remove what `local` holds that is not `present` at the URI, and the folders left empty;
    never a file being written (`.name.part`, `.export-*`) nor an export made on this machine
    (a folder with the prompt file), whose upload may not have ended."""
    made_here = {p.parent for p in local.rglob(PROMPT_FILE)}
    for path in sorted(local.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = path.relative_to(local)
        if any(part.startswith(".") for part in rel.parts) or made_here & {path, *path.parents}:
            continue
        if path.is_dir() and not path.is_symlink():
            if not any(path.iterdir()):
                path.rmdir()
        elif rel.as_posix() not in present:
            path.unlink()


def download_folder(uri: str, rel: str, local: Path) -> Path:
    """`uri/<rel>` (a checkpoint folder) into `local/<rel>`, unless it is there already.

    It lands by rename, so a download cut short never passes for a whole checkpoint.
    """
    dst = local / rel
    if not dst.exists():
        fs, base = open_storage(uri)
        tmp = dst.with_name(f".{dst.name}.part")
        shutil.rmtree(tmp, ignore_errors=True)  # what a download cut short left
        tmp.mkdir(parents=True)  # copy_files creates the folders below it, not it
        try:
            pafs.copy_files(f"{base}/{rel}", str(tmp), source_filesystem=fs)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise _unreachable(uri, err) from err
        os.replace(tmp, dst)
    return dst


# What `medtune dashboard <uri>` copies of an export: what the page shows of it.
DASHBOARD_EXPORT_FILES = ("metrics.json",)
FOLLOW_EVERY_S = 10.0


def remote_copy_dir(uri: str) -> Path:
    """Where a machine other than the driver keeps its copy of the sweep at `uri`: one folder
    per URI under $MEDTUNE_CACHE (default ~/.cache/medtune)/sweeps."""
    name = urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "sweep"
    digest = hashlib.sha256(uri.encode()).hexdigest()[:12]
    return default_cache_root() / "sweeps" / f"{name}-{digest}"


def copy_sweep(uri: str) -> Path:
    """Copy the sweep at `uri` (without checkpoints or models) to `remote_copy_dir(uri)`, for
    `medtune dashboard` or `export` on a machine other than the driver; returns the copy."""
    if not run_exists(uri):
        raise UserError(
            f"{redact_text(uri)}: nothing there; give a sweep's folder under its run.storage, "
            "e.g. s3://bucket/prefix/<run.name>"
        )
    if not run_exists(run_uri(uri, "medtune.yaml")):  # checked before copying anything
        raise UserError(
            f"{redact_text(uri)}: not a medtune sweep (no medtune.yaml); give a sweep's folder "
            "under its run.storage, e.g. s3://bucket/prefix/<run.name>"
        )
    local = remote_copy_dir(uri)
    try:
        download_results(uri, local, export_files=DASHBOARD_EXPORT_FILES, prune=True)
    except OSError as err:
        raise _unreachable(uri, err) from err
    return local


def is_sweep_uri(uri: str) -> bool:
    """Whether `uri` is a sweep's folder (it holds medtune.yaml), not a folder of sweeps."""
    return run_exists(run_uri(uri, "medtune.yaml"))


def copy_sweeps(uri: str) -> Path:
    """Copy each sweep in the folder of sweeps at `uri` (a run.storage URI) as `copy_sweep`
    copies one, to `remote_copy_dir(uri)/<name>`, dropping the copies of sweeps no longer
    there; returns the folder of copies, which `medtune dashboard` and `list` read as they
    read results/."""
    sweeps = dict(find_sweep_uris(uri))
    local = remote_copy_dir(uri)
    local.mkdir(parents=True, exist_ok=True)
    for name, sweep in sweeps.items():
        try:
            download_results(sweep, local / name, export_files=DASHBOARD_EXPORT_FILES, prune=True)
        except OSError as err:
            raise _unreachable(sweep, err) from err
    for old in local.iterdir():
        if old.is_dir() and old.name not in sweeps and not old.name.startswith("."):
            shutil.rmtree(old)
    return local


def follow_sweep(uri: str, every_s: float = FOLLOW_EVERY_S) -> Path:
    """`copy_sweep`, or `copy_sweeps` of a folder of sweeps, then keep the copy current every
    `every_s` seconds, in a daemon thread, while this process lives: what `medtune
    dashboard` reads when given a URI."""
    copy = copy_sweep if is_sweep_uri(uri) else copy_sweeps
    if copy is copy_sweeps and not find_sweep_uris(uri):
        raise UserError(
            f"{redact_text(uri)}: no medtune sweep there (no medtune.yaml in it nor in a folder "
            "directly under it); give a sweep's folder under its run.storage, e.g. "
            "s3://bucket/prefix/<run.name>, or the run.storage itself"
        )
    local = copy(uri)

    def follow() -> None:
        while True:
            time.sleep(every_s)
            try:
                copy(uri)
            except (OSError, UserError):
                pass  # the store unreachable for a while: the next round catches up

    threading.Thread(target=follow, name="medtune-follow-sweep", daemon=True).start()
    return local


class MirrorResults(Callback):
    """Keep the driver's results folder current with the storage URI while Tune runs (for
    `medtune dashboard`): at most every `every_s` seconds, and once at the end."""

    def __init__(self, uri: str, local: Path, every_s: float = 10.0):
        self.uri, self.local, self.every_s = uri, local, every_s
        # Never synced: the first result syncs at once (0.0 did so only once the machine had
        # been up `every_s`, since the monotonic clock counts from boot).
        self.last = float("-inf")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if time.monotonic() - self.last >= self.every_s:
            self._sync()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._sync()

    def on_experiment_end(self, trials, **info):
        self._sync()

    def _sync(self) -> None:
        self.last = time.monotonic()
        try:
            download_results(self.uri, self.local)
        except OSError:
            pass  # the next sync, or the one after the sweep, catches up


def _unchanged(dst: Path, info: pafs.FileInfo) -> bool:
    """Same size and the storage's modification time of the version last copied."""
    if not dst.exists():
        return False
    stat = dst.stat()
    same_time = info.mtime_ns is None or stat.st_mtime_ns == info.mtime_ns
    return stat.st_size == info.size and same_time
