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


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_a_second_process_on_a_sweep_is_refused_and_the_folder_kept(sweep, capsys):
    out, _ = sweep  # the suite's finished tiny-random sweep, with its export
    before = _snapshot(out)
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
    assert _snapshot(out) == before
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
