"""Tune's experiment folder copied to local storage by `tune.atomic_storage` (installed by
`tune.controller.copy_state_atomically`): a copy killed mid-file leaves the old file whole
(Tune's in-place copy left the experiment state empty), unchanged files are not copied again,
and Tune's own saves go through it."""

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from ray import tune

from tune.atomic_storage import PART_SUFFIX, copy_changed_files, remove_partial_files

OLD = b'{"trials": ["the state a resume needs"]}'
NEW = b'{"trials": ["the state a resume needs", "and one trial more"]}'
ROOT = Path(__file__).resolve().parents[2]

# Copies argv[2] to argv[3] as argv[1] says, and is SIGKILLed mid-file: medtune's copy just
# before its rename (the new bytes written in full), Tune's (pyarrow's in-place copy, file by
# file) once it has opened the file and written part of it.
KILLED_COPY = """
import os, signal, sys
import pyarrow.fs as pafs
from tune import atomic_storage

def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "medtune":
    atomic_storage.os.replace = killed
    atomic_storage.copy_changed_files(sys.argv[2], sys.argv[3])
else:
    data = open(os.path.join(sys.argv[2], "experiment_state-1.json"), "rb").read()
    out = pafs.LocalFileSystem().open_output_stream(
        os.path.join(sys.argv[3], "experiment_state-1.json")
    )
    out.write(data[:10])
    out.flush()
    killed()
"""


def _killed_copy(how: str, source: Path, target: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_COPY, how, str(source), str(target)],
        cwd=ROOT,
        capture_output=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


@pytest.fixture
def folders(tmp_path):
    """A staging folder with new state, and storage holding the previous save."""
    source, target = tmp_path / "staging", tmp_path / "storage"
    for folder, state in ((source, NEW), (target, OLD)):
        (folder / "trial_a").mkdir(parents=True)
        (folder / "experiment_state-1.json").write_bytes(state)
    (source / "trial_a" / "result.json").write_bytes(b'{"step": 5}\n' * 100_000)
    return source, target


def test_a_copy_killed_mid_file_leaves_the_old_file(folders):
    source, target = folders
    _killed_copy("medtune", source, target)
    assert (target / "experiment_state-1.json").read_bytes() == OLD
    # What it leaves is a hidden part file, which `--resume` removes before it starts.
    (part,) = target.rglob(f"*{PART_SUFFIX}")
    assert part.name.startswith(".") and part.read_bytes() == NEW  # the folder's first file
    assert remove_partial_files(target) == 1
    assert not list(target.rglob(f"*{PART_SUFFIX}"))
    # The next copy completes it.
    assert copy_changed_files(str(source), str(target)) == 2
    assert (target / "experiment_state-1.json").read_bytes() == NEW


def test_tunes_own_copy_killed_there_loses_the_old_file(folders):
    """The failure this module exists for, with pyarrow's filesystem as Tune copies through it."""
    source, target = folders
    _killed_copy("tune", source, target)
    assert (target / "experiment_state-1.json").read_bytes() == NEW[:10]


def test_only_changed_files_are_copied_each_whole_with_the_usual_permissions(folders):
    source, target = folders
    assert copy_changed_files(str(source), str(target)) == 2
    for name in ("experiment_state-1.json", "trial_a/result.json"):
        src, dst = source / name, target / name
        assert dst.read_bytes() == src.read_bytes()
        assert dst.stat().st_mtime_ns == src.stat().st_mtime_ns
    umask = os.umask(0)
    os.umask(umask)
    assert (target / "trial_a" / "result.json").stat().st_mode & 0o777 == 0o666 & ~umask
    unchanged = (target / "trial_a" / "result.json").stat().st_ino
    # A new save with one file rewritten (same size, newer time): only that one is copied.
    state = source / "experiment_state-1.json"
    state.write_bytes(NEW.replace(b"one", b"two"))
    os.utime(state, ns=(state.stat().st_atime_ns, state.stat().st_mtime_ns + 1000))
    assert copy_changed_files(str(source), str(target)) == 1
    assert (target / "experiment_state-1.json").read_bytes() == state.read_bytes()
    assert (target / "trial_a" / "result.json").stat().st_ino == unchanged
    assert copy_changed_files(str(source), str(target)) == 0
    # Files only in storage stay, as with Tune's copy; no part file is left behind.
    (target / "elsewhere.json").write_text("{}")
    copy_changed_files(str(source), str(target))
    assert (target / "elsewhere.json").exists()
    assert not list(target.rglob(f"*{PART_SUFFIX}"))


def test_remove_partial_files_keeps_everything_else(tmp_path):
    (tmp_path / "trial_a").mkdir()
    (tmp_path / "trial_a" / "result.json").write_text("{}")
    (tmp_path / "trial_a" / ".hidden").write_text("kept")
    (tmp_path / "trial_a" / f".result.json.1-2-3{PART_SUFFIX}").write_text("{")
    assert remove_partial_files(tmp_path) == 1
    assert sorted(p.name for p in (tmp_path / "trial_a").iterdir()) == [".hidden", "result.json"]


def _reporting(config):
    for step in range(3):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "step").write_text(str(step))
            tune.report({"step": step}, checkpoint=tune.Checkpoint.from_directory(d))


@pytest.mark.usefixtures("ray_2_cpus")
@pytest.mark.parametrize("hooks", ["tune_as_is", "tune_as_medtune_runs_it"])
def test_tunes_saves_go_through_it_for_local_storage(tmp_path, request, hooks):
    """A real Tuner's saves: with the hook, storage holds the staging folder's files with
    their modification times (which only medtune's copy keeps) and the state reads."""
    from ray.train.constants import _get_ray_train_session_dir

    request.getfixturevalue(hooks)
    grid = tune.Tuner(
        _reporting,
        param_space={"x": tune.grid_search([1, 2])},
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="exp", verbose=0),
    ).fit()
    assert not grid.errors
    storage = tmp_path / "exp"
    # This run's staging folder: the newest of this Ray session's experiments named "exp".
    runs = Path(_get_ray_train_session_dir()).glob("*/exp/driver_artifacts")
    staging = max(runs, key=lambda p: p.stat().st_mtime)
    files = [p.relative_to(staging) for p in staging.rglob("*") if p.is_file()]
    assert any(f.name == "result.json" for f in files)
    kept = {f: (staging / f).stat().st_mtime_ns == (storage / f).stat().st_mtime_ns for f in files}
    if hooks == "tune_as_medtune_runs_it":
        assert all(kept.values()), kept
        for f in files:
            assert (storage / f).read_bytes() == (staging / f).read_bytes()
        (state,) = storage.glob("experiment_state-*.json")
        assert len(json.loads(state.read_text())["trial_data"]) == 2
    else:
        assert not all(kept.values())
    assert not list(storage.rglob(f"*{PART_SUFFIX}"))


def test_storage_at_a_uri_keeps_tunes_copy():
    from ray.train._internal.storage import _FilesystemSyncer, _upload_to_fs_path

    from tune.controller import copy_state_atomically

    copy_state_atomically()
    s3 = pafs.SubTreeFileSystem("/", pafs.LocalFileSystem())  # any filesystem but the local one
    command, _ = _FilesystemSyncer(s3)._sync_up_command("/a", "b")
    assert command is _upload_to_fs_path
    command, _ = _FilesystemSyncer(pafs.LocalFileSystem())._sync_up_command("/a", "b")
    assert command is copy_changed_files


def test_a_file_gone_since_the_listing_is_skipped(folders, monkeypatch):
    """Tune may delete a staging file while a background copy runs: the copy goes on."""
    import tune.atomic_storage

    source, target = folders
    listing = os.walk

    def listing_with_a_deleted_file(top):
        for folder, dirs, names in listing(top):
            yield folder, dirs, [*names, "deleted.json"]

    monkeypatch.setattr(tune.atomic_storage.os, "walk", listing_with_a_deleted_file)
    assert copy_changed_files(str(source), str(target)) == 2
    assert not list(target.rglob("deleted.json")) and not list(target.rglob(f"*{PART_SUFFIX}"))
