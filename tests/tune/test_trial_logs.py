"""A trial Tune restarts from its checkpoint, after a pause or a failure, keeps every row of
its logs in a sweep run as medtune runs it (tune/controller.py's `snapshot_at_every_checkpoint`).

The storage copy of a trial's logs trails the driver's own between Tune's syncs. Here it is
made to trail by exactly one row, as a sync right after the first report leaves it: a driver
callback writes that copy when the second report arrives, with Tune's periodic syncs pushed
past the run. Then the trial is paused at that report by a real Tune scheduler, or fails right
after it, and Tune restarts it from its checkpoint. Tune's JSON logger copies the storage file
back over the driver's as the trial restarts: by itself Tune loses the row (checked too, so a
Ray upgrade that changes it shows here; it is what a bare Tuner in tests/tune/test_scheduler.py
lost). With medtune's hook, the checkpoint that report carried was saved with the experiment
state and the logs before the restart, and every row is kept.
"""

import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

REPORTS, PAUSE_AT = 4, 2


def _counting(config):
    """Reports iterations 1..REPORTS, each with a checkpoint; resumes after the last saved.
    With `fail_once` (a path), fails right after its PAUSE_AT-th report, once."""
    start = 0
    if checkpoint := tune.get_checkpoint():
        start = int(Path(checkpoint.path, "iteration").read_text())
    for iteration in range(start + 1, REPORTS + 1):
        with tempfile.TemporaryDirectory() as d:
            Path(d, "iteration").write_text(str(iteration))
            tune.report({"iteration": iteration}, checkpoint=tune.Checkpoint.from_directory(d))
        failed = Path(config["fail_once"]) if config["fail_once"] else None
        if iteration == PAUSE_AT and failed and not failed.exists():
            failed.touch()
            raise RuntimeError("failing once, after a checkpoint")


class _PauseOnce(FIFOScheduler):
    """FIFO, but pauses each trial once, at its PAUSE_AT-th report (FIFO resumes it)."""

    def __init__(self):
        super().__init__()
        self.paused = set()

    def on_trial_result(self, tune_controller, trial, result):
        if result["training_iteration"] == PAUSE_AT and trial.trial_id not in self.paused:
            self.paused.add(trial.trial_id)
            return TrialScheduler.PAUSE
        return TrialScheduler.CONTINUE


class _StorageOneRowBehind(Callback):
    """At the PAUSE_AT-th report, the storage copy of each log is the driver's rows before it."""

    def on_trial_result(self, iteration, trials, trial, result):
        if result["training_iteration"] != PAUSE_AT:
            return
        local, storage = Path(trial.local_path), Path(trial.path)
        storage.mkdir(parents=True, exist_ok=True)
        rows = [
            line
            for line in (local / "result.json").read_text().splitlines()
            if json.loads(line)["training_iteration"] < PAUSE_AT
        ]
        (storage / "result.json").write_text("".join(f"{row}\n" for row in rows))
        csv = pd.read_csv(local / "progress.csv")
        csv[csv["training_iteration"] < PAUSE_AT].to_csv(storage / "progress.csv", index=False)


@pytest.mark.usefixtures("ray_2_cpus")
@pytest.mark.parametrize("restart", ["pause", "failure"])
@pytest.mark.parametrize("hooks", ["tune_as_is", "tune_as_medtune_runs_it"])
def test_a_restarted_trial_keeps_every_row_of_its_logs(
    tmp_path, monkeypatch, request, hooks, restart
):
    request.getfixturevalue(hooks)
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "3600")  # no periodic sync during the run
    fail_once = str(tmp_path / "failed-once") if restart == "failure" else None
    result = tune.Tuner(
        _counting,
        param_space={"fail_once": fail_once},
        tune_config=tune.TuneConfig(
            scheduler=_PauseOnce() if restart == "pause" else FIFOScheduler(),
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="exp",
            callbacks=[_StorageOneRowBehind()],
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    ).fit()[0]
    assert result.error is None, result.error
    assert restart == "pause" or Path(fail_once).exists()
    # Restarted from the checkpoint of its PAUSE_AT-th report: each iteration trained once.
    assert result.metrics["iteration"] == REPORTS
    from_json = list(result.metrics_dataframe["training_iteration"])  # Tune reads result.json
    from_csv = list(pd.read_csv(Path(result.path, "progress.csv"))["training_iteration"])
    every = list(range(1, REPORTS + 1))
    if hooks == "tune_as_medtune_runs_it":
        assert (from_json, from_csv) == (every, every)
    else:
        assert from_json == [i for i in every if i != PAUSE_AT]
