"""tune/controller.py's `kill_actors_that_never_started`, on a real Tuner: a trial process
that Tune started for a trial and then no longer needs (the trial got a cached process
instead) is killed while it is still starting, not left to start and then stopped.

The other two hooks are checked by tests/tune/test_resume_order.py and test_resume.py."""

import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


class _SlowToLoad:
    """Unpickled in each trial process as it starts (the trainable's closure holds it): at
    once in the first one and in the driver, 120 s in any other, which marks itself as
    starting with its pid. Stands for a trial process importing torch and transformers."""

    def __init__(self, folder: str, driver: int):
        self.folder, self.driver = folder, driver

    def __reduce__(self):
        return _load, (self.folder, self.driver)


def _load(folder: str, driver: int) -> _SlowToLoad:
    first = Path(folder, "first")
    if os.getpid() != driver:
        try:
            with first.open("x") as f:
                f.write(str(os.getpid()))
        except FileExistsError:
            if first.read_text() != str(os.getpid()):  # a process may load it twice
                Path(folder, f"{os.getpid()}.starting").touch()
                time.sleep(120)
    return _SlowToLoad(folder, driver)


def _trainable_with(slow: _SlowToLoad):
    def trainable(config):
        from ray import tune

        folder = Path(slow.folder)
        deadline = time.monotonic() + 60
        try:  # the first trial to run (in the process that started at once)
            os.close(os.open(folder / "ran", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            (starting,) = folder.glob("*.starting")
            pid = int(starting.stem)
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            tune.report({"pid": os.getpid(), "starting_gone": not _alive(pid)})
            return
        # Finish only once the other trial's process is starting: Tune then hands the other
        # trial this process, cached, and no longer needs the starting one.
        while not list(folder.glob("*.starting")) and time.monotonic() < deadline:
            time.sleep(0.1)
        tune.report({"pid": os.getpid(), "starting_gone": None})

    return trainable


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.usefixtures("ray_2_cpus", "tune_as_is")
def test_a_trial_process_no_longer_needed_is_killed_while_it_starts(tmp_path):
    from ray import tune

    from tune.controller import kill_actors_that_never_started

    kill_actors_that_never_started()
    folder = tmp_path / "marks"
    folder.mkdir()
    trainable = _trainable_with(_SlowToLoad(str(folder), os.getpid()))
    results = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([1, 2])},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path), verbose=0),
    ).fit()
    assert not results.errors, results.errors
    first, second = sorted(results, key=lambda r: r.metrics["starting_gone"] is not None)
    assert len(list(folder.glob("*.starting"))) == 1  # one process was still starting
    # The second trial ran in the first one's process, and the starting one was killed while
    # it ran, 100 s before it would have finished starting.
    assert second.metrics["pid"] == first.metrics["pid"]
    assert second.metrics["starting_gone"] is True
