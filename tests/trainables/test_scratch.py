"""A trial's scratch folder: the folders of killed trials are removed by the next trial, a
running trial's never. Real processes hold the folders; one is SIGKILLed, as a node loss or a
killed driver does to its trials."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainables.scratch import PREFIX, remove_abandoned, trial_scratch

HOLD = """
import sys, time
from trainables.scratch import trial_scratch
with trial_scratch(sys.argv[1], sys.argv[2]) as work:
    (work / "checkpoint-5").mkdir()
    (work / "checkpoint-5" / "optimizer.pt").write_bytes(b"x" * 4096)
    print(work, flush=True)
    time.sleep(600)
"""


@pytest.fixture
def holders(tmp_path):
    """Start processes that each make a scratch folder and keep it; kill them on teardown."""
    procs = []

    def hold(label: str) -> tuple[subprocess.Popen, Path]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, label, str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        procs.append(proc)
        return proc, Path(proc.stdout.readline().strip())

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def test_killed_trials_folder_goes_running_trials_stays(tmp_path, holders):
    dead, dead_work = holders("deadbeef")
    live, live_work = holders("c0ffee00")
    assert dead_work.name.startswith(f"{PREFIX}deadbeef-")
    assert (dead_work / "checkpoint-5" / "optimizer.pt").is_file()
    os.kill(dead.pid, signal.SIGKILL)
    dead.wait()
    assert dead_work.exists()  # a killed process cannot clean up after itself

    # Left by a medtune from before the locks: removed once a day old, kept while younger.
    stale, recent = tmp_path / f"{PREFIX}abc-old", tmp_path / f"{PREFIX}abc-new"
    for folder in (stale, recent):
        (folder / "checkpoint-10").mkdir(parents=True)
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    unrelated = tmp_path / "ray"
    unrelated.mkdir()
    os.utime(unrelated, (two_days_ago, two_days_ago))

    with trial_scratch("1234abcd", tmp_path) as mine:
        assert mine.name.startswith(f"{PREFIX}1234abcd-")
        assert mine.parent == tmp_path and mine.is_dir()
        assert not dead_work.exists()
        assert not stale.exists()
        assert (live_work / "checkpoint-5" / "optimizer.pt").is_file()
        assert recent.is_dir() and unrelated.is_dir()
        # Another trial starting meanwhile leaves this one's folder alone.
        assert remove_abandoned(tmp_path) == []
        assert mine.is_dir()
    assert not mine.exists()
    assert live.poll() is None and live_work.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live_work.name, recent.name, "ray"]
    )


def test_folder_is_removed_when_the_trial_raises(tmp_path):
    with pytest.raises(RuntimeError, match="injected"), trial_scratch("t", tmp_path) as work:
        (work / "checkpoint-1").mkdir()
        raise RuntimeError("injected")
    assert list(tmp_path.iterdir()) == []
