"""One medtune process at a time on a sweep's folder (tune/run_lock.py): while one holds it,
`medtune sweep --resume`, `medtune sweep --overwrite` of the same name and `medtune export`
are refused with one line naming the holder, exit 2, and the folder is left as it was; a
holder killed with SIGKILL leaves no stale lock."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tune.conftest import snapshot
from tune.cli import main
from tune.errors import UserError
from tune.run_lock import lock_path, sweep_lock

pytestmark = pytest.mark.slow

HOLDER = """
import sys, time
from pathlib import Path
from tune.run_lock import sweep_lock
with sweep_lock(Path(sys.argv[1]), "medtune sweep"):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def own_sweep(sweep, tmp_path):
    """A copy of the suite's finished tiny-random sweep, without checkpoints or export: the
    tests here hold its lock, which would refuse the other files' exports of the shared one
    running beside them (and be refused by them)."""
    import shutil

    finished, _ = sweep
    out = tmp_path / "results" / finished.name
    shutil.copytree(finished, out, ignore=shutil.ignore_patterns("checkpoint_*", "export"))
    return out


def test_a_second_process_on_a_sweep_is_refused_and_the_folder_kept(own_sweep, capsys):
    out = own_sweep
    before = snapshot(out)
    # Held through another open file, as another process holds it (flock locks belong to
    # an open file, not to a process).
    with sweep_lock(out, "medtune sweep --resume"):
        holder = lock_path(out).read_text()
        assert holder.startswith(f"medtune sweep --resume (pid {os.getpid()}, since ")
        for argv in (
            ["export", str(out)],
            ["sweep", "--resume", str(out)],
            [
                "sweep",
                "--overwrite",
                "--no-export",
                "model.name=tiny-random",
                "data.max_records=120",
                f"run.storage={out.parent}",
                f"run.name={out.name}",
            ],
        ):
            assert main(argv) == 2, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert err == [
                f"medtune: error: {out}: {holder} is working on this sweep; wait for it to "
                "end, or stop it (Ctrl-C in its terminal), then run this again"
            ], argv
    assert snapshot(out) == before
    assert not lock_path(out).exists()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "results" / "sweep"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"medtune sweep \\(pid {proc.pid}, since "):
            with sweep_lock(out, "medtune export"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert lock_path(out).exists()  # what SIGKILL leaves: the file, with no lock on it
    with sweep_lock(out, "medtune export"):
        assert lock_path(out).read_text().startswith(f"medtune export (pid {os.getpid()}")
        assert "medtune sweep" not in lock_path(out).read_text()
    assert not out.exists()  # the lock sits beside the folder: --overwrite deletes the folder
    assert not lock_path(out).exists()  # and goes when released


def test_a_lock_file_deleted_as_it_is_taken_is_taken_again(tmp_path, monkeypatch):
    """The holder deletes the lock file as it lets go; a process that opened the file just
    before locks a name that no longer leads to it, and must take the new file instead."""
    import fcntl

    import tune.run_lock

    out = tmp_path / "results" / "sweep"
    flock, deleted = fcntl.flock, []

    def flock_as_the_holder_lets_go(fd, operation):
        flock(fd, operation)
        if not deleted:  # the first file, locked just after its holder deleted it
            lock_path(out).unlink()
            deleted.append(os.fstat(fd).st_ino)

    monkeypatch.setattr(tune.run_lock.fcntl, "flock", flock_as_the_holder_lets_go)
    with sweep_lock(out, "medtune export"):
        assert deleted and lock_path(out).exists()  # a new file, and it is the one held:
        fd = os.open(lock_path(out), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        assert lock_path(out).read_text().startswith("medtune export (pid ")


def test_a_sweep_no_process_works_on_shows_its_driver_gone(own_sweep, capsys):
    """No summary and nobody holding the lock: the driver was killed. The dashboard says so
    (and that --resume goes on), with no trial left "running"; held, it is in progress."""
    import json

    from tune.dashboard import render_page
    from tune.sweep_state import read_sweep

    out = own_sweep
    (out / "sweep_summary.json").unlink()
    state_file = sorted(out.glob("experiment_state-*.json"))[-1]  # one trial still running
    state = json.loads(state_file.read_text())
    trial = json.loads(state["trial_data"][0][0])
    trial["status"] = "RUNNING"
    state["trial_data"][0][0] = json.dumps(trial)
    state_file.write_text(json.dumps(state))

    gone = read_sweep(out)
    assert gone.driver_gone and not gone.finished
    assert gone.counts["running"] == 0 and gone.counts["unfinished"] == 1
    page = render_page(gone, live=True, nonce="n", charts={})
    assert '<span id="sweep-status">stopped: driver gone</span>' in page
    assert f"go on with <code>medtune sweep --resume {out}</code>" in page

    # Export refuses both, saying which it is.
    assert main(["export", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"medtune: error: {out}: the sweep has not finished (no sweep_summary.json) and no "
        "medtune process is working on it (its driver was killed, or its machine restarted); "
        f"go on with `medtune sweep --resume {out}`, which exports at its end"
    )

    with sweep_lock(out, "medtune sweep --resume"):
        live = read_sweep(out)
        holder = lock_path(out).read_text()
        assert main(["export", str(out)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"medtune: error: {out}: the sweep has not finished (no sweep_summary.json): "
            f"{holder} is working on it; export once it has ended (a sweep exports its best "
            "at its end unless run with --no-export)"
        )
    assert not live.driver_gone and live.counts["running"] == 1
    page = render_page(live, live=True, nonce="n", charts={})
    assert '<span id="sweep-status">in progress</span>' in page and "--resume" not in page


def test_a_dashboard_probe_does_not_refuse_a_sweep(tmp_path):
    """`holder` takes a shared lock for an instant; a sweep starting just then gets in."""
    import fcntl
    import threading

    from tune.run_lock import holder

    out = tmp_path / "results" / "sweep"
    assert holder(out) is None  # no lock file at all
    out.parent.mkdir(parents=True)
    probe = os.open(lock_path(out), os.O_RDWR | os.O_CREAT)
    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe caught mid-way
    threading.Timer(0.05, os.close, [probe]).start()
    with sweep_lock(out, "medtune sweep"):
        assert holder(out) is not None
    assert holder(out) is None


def test_a_folder_it_cannot_write_beside_is_one_line(tmp_path):
    parent = tmp_path / "results"
    parent.write_text("a file where the sweeps' folder should be")
    with pytest.raises(UserError, match="cannot create its lock file .*: run it where"):
        with sweep_lock(parent / "sweep", "medtune export"):
            pass


def test_a_sweep_run_from_python_takes_the_lock_itself(own_sweep):
    """`run_sweep` and `resume_sweep` hold the lock, not only the `medtune` commands: refused
    while another holds it, before `overwrite` deletes anything (and a sweep run from Python
    reads as running on the dashboard, not as "driver gone")."""
    from rich.console import Console

    from tune.config import load_config
    from tune.sweep import prepare_sweep, resume_sweep, run_sweep

    out = own_sweep
    before = snapshot(out)
    quiet = Console(quiet=True)
    overrides = ["model.name=tiny-random", "data.max_records=40"]
    cfg = load_config(None, [*overrides, f"run.storage={out.parent}", f"run.name={out.name}"])
    prep = prepare_sweep(cfg, quiet, overwrite=True)
    with sweep_lock(out, "medtune export"):
        busy = "medtune export \\(pid .*\\) is working on this sweep"
        with pytest.raises(UserError, match=busy):
            resume_sweep(out, quiet)
        with pytest.raises(UserError, match=busy):
            run_sweep(prep, quiet, overwrite=True)
    assert snapshot(out) == before
