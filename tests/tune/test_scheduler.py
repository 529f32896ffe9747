"""ComparingASHA in real Ray Tune sweeps: two trials whose losses and speeds are set, so each
decision is known in advance. The first trial reaches every rung first (it does not sleep).
Tune runs with the hook medtune's sweeps install (its experiment state and trial logs saved at
every checkpoint): by itself, Tune once lost a paused trial's row at its rung from result.json
(tests/tune/test_trial_logs.py)."""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from ray import tune

from tests.conftest import read_progress
from tests.tune.conftest import MEDTUNE, kill_session, start_medtune
from tune.run_lock import sweep_lock
from tune.scheduler import ComparingASHA
from tune.sweep_state import read_sweep

MAX_T = 4  # rungs at 1 and 2 evaluations; 4 is the full budget


def _curve(config):
    """Reports `config["loss"]` every iteration with a checkpoint; says where it resumed from.

    Orderings that sleeps alone cannot guarantee on a loaded machine: `marks` maps an iteration
    (as a string) to a file created just before the trial reports it; `wait_for` (a path) holds
    the trial's first report until that file exists. `delay` seconds pass before each report."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start = int((Path(d) / "iteration").read_text())
    for iteration in range(start + 1, MAX_T + 1):
        if iteration == 1 and config.get("wait_for"):
            while not Path(config["wait_for"]).exists():
                time.sleep(0.1)
        time.sleep(config["delay"])
        if mark := config.get("marks", {}).get(str(iteration)):
            Path(mark).touch()
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "iteration").write_text(str(iteration))
            tune.report(
                {"loss": config["loss"], "resumed_from": start},
                checkpoint=tune.Checkpoint.from_directory(d),
            )


def _in_order(tmp_path, *losses: float) -> list[dict]:
    """One trial per loss, each holding its first report until the one before has reported
    rung 1, then sleeping 2k² s (0, 2, 8) before every report: they reach each rung in order,
    with seconds to spare for a trial process to start or restart."""
    marks = [str(tmp_path / f"trial-{k}-at-rung-1") for k in range(len(losses))]
    return [
        {
            "loss": loss,
            "delay": 2.0 * k * k,
            "marks": {"1": marks[k]},
            "wait_for": marks[k - 1] if k else None,
        }
        for k, loss in enumerate(losses)
    ]


def _sweep(tmp_path, *losses: float, max_concurrent=None, trials=None) -> list:
    """Runs the trials (by default `_in_order(losses)`) under ComparingASHA; returns each
    one's results, ordered by `delay` (the fastest first)."""
    if trials is None:
        trials = _in_order(tmp_path, *losses)
    scheduler = ComparingASHA(
        num_samples=len(trials),
        max_concurrent=max_concurrent,
        time_attr="training_iteration",
        max_t=MAX_T,
        grace_period=1,
        reduction_factor=2,
    )
    tuner = tune.Tuner(
        tune.with_resources(_curve, {"cpu": 1}),
        param_space=tune.grid_search(trials),
        tune_config=tune.TuneConfig(
            metric="loss",
            mode="min",
            scheduler=scheduler,
            max_concurrent_trials=max_concurrent,
            reuse_actors=False,  # a paused trial leaves no actor behind (see the first test)
            # A trial left waiting for ever would end the sweep here; far above a healthy sweep
            # (15-50 s), so a loaded machine, where restarting a trial once took 40 s, fits.
            time_budget_s=300,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0),
    )
    grid = tuner.fit()
    assert not grid.errors
    by_loss = sorted(grid, key=lambda r: r.config["delay"])  # the fast (first) trial first
    return [r.metrics_dataframe for r in by_loss]


@pytest.mark.usefixtures("ray_2_cpus", "tune_as_medtune_runs_it")
def test_the_first_trial_at_a_rung_waits_and_a_worse_one_is_stopped_there(tmp_path, monkeypatch):
    # Tune saves its experiment state at every step, as medtune's driver does at every
    # checkpoint: a state saved while the first trial waits must not outlive its stop.
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")
    first, second = _sweep(tmp_path, 2.0, 1.0)
    # Ray's ASHA would promote the first trial unopposed and run it to the end.
    assert list(first["training_iteration"]) == [1]
    assert list(second["training_iteration"]) == [1, 2, 3, 4]
    assert (second["resumed_from"] == 0).all()
    # The experiment state on disk (what the dashboard and --resume read) has the trial
    # stopped while paused as ended, not still paused.
    (state_file,) = tmp_path.glob("*/experiment_state-*.json")
    trials = [json.loads(t[0]) for t in json.loads(state_file.read_text())["trial_data"]]
    assert [t["status"] for t in trials] == ["TERMINATED", "TERMINATED"]


@pytest.mark.usefixtures("ray_2_cpus", "tune_as_medtune_runs_it")
def test_a_waiting_trial_that_wins_resumes_from_its_checkpoint(tmp_path):
    first, second = _sweep(tmp_path, 1.0, 2.0)
    assert list(second["training_iteration"]) == [1]
    assert list(first["training_iteration"]) == [1, 2, 3, 4]
    # Paused at iteration 1, then resumed from the checkpoint it reported there. At rung 2 no
    # other trial could arrive any more, so it did not wait again.
    assert list(first["resumed_from"]) == [0, 1, 1, 1]


@pytest.mark.usefixtures("ray_2_cpus", "tune_as_medtune_runs_it")
def test_a_trial_waiting_for_one_that_is_stopped_below_its_rung_goes_on(tmp_path):
    # The first trial wins rung 1 against the second, then reaches rung 2 while the third
    # (slowest) is still below it, and waits. The third is stopped at rung 1: nothing can
    # reach rung 2 any more, so the first goes on. (Seen in a benchmark before the fix: Tune
    # reports a trial's end to the scheduler while its status is still RUNNING, and the
    # waiting trial waited on it for ever.)
    # The third holds its first report until the first has reached rung 2, then 3 s more:
    # with sleeps alone (8 s), a loaded CI machine once restarted the paused first trial so
    # slowly that the third reached rung 1 before the first reached rung 2.
    first, second, third = _in_order(tmp_path, 1.0, 2.0, 3.0)
    first["marks"]["2"] = str(tmp_path / "first-at-rung-2")
    third.update(delay=3.0, wait_for=first["marks"]["2"])
    first, second, third = _sweep(tmp_path, trials=[first, second, third])
    assert list(second["training_iteration"]) == [1]
    assert list(third["training_iteration"]) == [1]
    assert list(first["training_iteration"]) == [1, 2, 3, 4]
    assert list(first["resumed_from"]) == [0, 1, 2, 2]


@pytest.mark.usefixtures("ray_2_cpus", "tune_as_medtune_runs_it")
def test_no_trial_waits_for_one_the_concurrency_cap_would_not_start(tmp_path):
    first, second = _sweep(tmp_path, 2.0, 1.0, max_concurrent=1)
    # One trial at a time: the first has nobody to wait for and runs its budget, as in Ray's
    # ASHA; the second, compared at each rung against it, is better and runs too.
    assert list(first["training_iteration"]) == [1, 2, 3, 4]
    assert (first["resumed_from"] == 0).all()
    assert list(second["training_iteration"]) == [1, 2, 3, 4]


@pytest.mark.slow
def test_a_trial_waiting_at_a_rung_when_the_sweep_is_interrupted_waits_again_on_resume(
    tmp_path, model_cache
):
    """The real CLI end to end: trial A waits at its first rung, trial B is stuck before it
    (`MEDTUNE_FAULT=hang@3`), Ctrl-C stops the sweep. `--resume` restores A's rung and its wait
    (tune/sweep.py `restore_rungs`): A waits until B, trained again from its start, reports at
    the rung; the tie promotes A, which resumes from its checkpoint. Pausing, interrupting and
    resuming must not change training: both trials evaluate the same at every step."""
    space = tmp_path / "one_point.yaml"  # the same trial twice: every comparison is a tie
    space.write_text(
        "learning_rate: {type: choice, values: [0.001]}\n"
        "weight_decay: {type: choice, values: [0.0]}\n"
        "lora_r: {type: choice, values: [8]}\n"
    )
    args = [
        "model.name=tiny-random",
        "data.max_records=60",
        "search.num_samples=2",
        f"search.space={space}",
        "scheduler.name=asha",
        "train.max_steps=20",
        "train.eval_every=5",
        "train.per_device_batch_size=4",
        "ray.dashboard=false",
        "run.name=pause",
    ]
    out, log = tmp_path / "results" / "pause", tmp_path / "sweep.log"
    # The first trial to start runs clean, the second hangs as its step 3 begins.
    faults = {"MEDTUNE_FAULT": "none,hang@3", "MEDTUNE_FAULT_DIR": str(tmp_path / "claims")}
    proc = start_medtune(["sweep", "--no-export", *args], tmp_path, log, faults)
    try:
        deadline = time.monotonic() + 300
        while "waits at step 5 to be compared" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        kill_session(proc.pid)
    first = log.read_text()
    (waiting,) = re.findall(r"‖ (trial \d/2) waits at step 5 to be compared", first)
    (stuck,) = {"trial 1/2", "trial 2/2"} - {waiting}
    assert f"{stuck} step" not in first  # it never reached an evaluation

    # The dashboard's reading of a trial Tune saved paused, while a driver runs the sweep (it
    # holds the lock and has written no summary yet): waiting. A copy: the sweep is resumed.
    shown = tmp_path / "shown"
    shutil.copytree(out, shown)
    (shown / "sweep_summary.json").unlink()
    with sweep_lock(shown, "medtune sweep"):
        sweep = read_sweep(shown)
    state = json.loads(sorted(shown.glob("experiment_state-*.json"))[-1].read_text())
    (paused,) = [
        t["trial_id"]
        for t in (json.loads(trial) for trial, _ in state["trial_data"])
        if t["status"] == "PAUSED"
    ]
    assert {t.trial_id: t.status for t in sweep.trials}[paused] == "waiting"
    assert sweep.counts["waiting"] == 1
    assert read_sweep(out).counts["unfinished"] == 2  # the interrupted sweep itself

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    resumed = subprocess.run(
        [MEDTUNE, "sweep", "--resume", str(out), "--no-export"],
        cwd=tmp_path,
        env=env,  # no faults: the stuck trial trains
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    lines = resumed.stdout.splitlines()

    def at(text: str) -> int:
        found = [i for i, line in enumerate(lines) if text in line]
        assert len(found) == 1, f"{text!r} printed {len(found)} times:\n{resumed.stdout}"
        return found[0]

    # A waits again, until B reports at the rung; then it resumes from its checkpoint.
    assert at(f"‖ {waiting} waits at step 5") < at(f"{stuck} step    5/20")
    assert at(f"{stuck} step    5/20") < at(f"▶ {waiting} resumes from step 5")
    assert "stopped early by the scheduler" not in resumed.stdout
    assert "Sweep done: 2 trials, 0 stopped early, 0 errored" in resumed.stdout

    curves = [read_progress(p) for p in sorted(out.glob("trial_*/progress.csv"))]
    assert len(curves) == 2
    for df in curves:
        assert list(df["step"]) == [5, 10, 15, 20]
    # Tune counts iterations since the trial's last restore from a checkpoint.
    assert any((df["iterations_since_restore"] < df["training_iteration"]).any() for df in curves)
    assert list(curves[0]["eval_loss"]) == pytest.approx(list(curves[1]["eval_loss"]), rel=1e-6)


def test_a_resumed_sweep_s_asha_rungs_hold_what_the_trials_reported_there():
    """Tune saves no scheduler state. Without the rungs refilled, trial b (restored after its
    step-20 evaluation, rung 2) paused at step 30 as if that were rung 2's result; with them,
    it goes on, and a new trial is stopped below the cutoff its rung already holds."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from tune.config import load_config
    from tune.sweep import _scheduler, restore_rungs
    from tune.sweep_state import Evaluation

    cfg = load_config(None, ["model.name=tiny-random", "train.max_steps=40", "train.eval_every=10"])
    scheduler = _scheduler(cfg)  # ComparingASHA, rungs at 1 and 2 evaluations (steps 10, 20)
    scheduler.set_search_properties(cfg.search.metric, cfg.search.mode)  # as Tune does

    def history(*losses):
        return [Evaluation(10 * (i + 1), v, None, None, 0.0) for i, v in enumerate(losses)]

    restore_rungs(scheduler, {"a": history(2.9), "b": history(2.7, 2.6), "c": history(2.8)}, cfg)
    rungs = dict(scheduler._brackets[0]._rungs)
    assert rungs == {4: {}, 2: {"b": -2.6}, 1: {"a": -2.9, "b": -2.7, "c": -2.8}}

    controller = SimpleNamespace(get_trials=lambda: [])
    b = SimpleNamespace(trial_id="b", status="RUNNING", last_result={})
    scheduler.on_trial_add(controller, b)
    result = {"training_iteration": 3, "eval_loss": 2.55}
    assert scheduler.on_trial_result(controller, b, result) == TrialScheduler.CONTINUE
    d = SimpleNamespace(trial_id="d", status="RUNNING", last_result={})
    scheduler.on_trial_add(controller, d)
    result = {"training_iteration": 1, "eval_loss": 2.95}  # worse than rung 1's median
    assert scheduler.on_trial_result(controller, d, result) == TrialScheduler.STOP


def test_a_trial_waiting_to_be_compared_when_the_sweep_stopped_waits_again_after_resume():
    """Trial a was paused at rung 1 (step 10), the only result there, when the sweep stopped.
    Restored, it is not started again until a rival has reported at rung 1; then ASHA's
    cutoff over the rung decides it (here: stopped, the rival being better). A trial paused
    at a rung that had its quorum had been promoted (it waited for a free slot): it starts."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from tune.config import load_config
    from tune.sweep import _scheduler, restore_rungs
    from tune.sweep_state import Evaluation

    overrides = ["model.name=tiny-random", "train.max_steps=40", "train.eval_every=10"]
    cfg = load_config(None, [*overrides, "search.num_samples=3"])

    def history(*losses):
        return [Evaluation(10 * (i + 1), v, None, None, 0.0) for i, v in enumerate(losses)]

    def restored(scheduler, reported, paused):
        """The scheduler and a controller holding the trials as Tune restores them: PENDING."""
        scheduler.set_search_properties(cfg.search.metric, cfg.search.mode)  # as Tune does
        restore_rungs(scheduler, reported, cfg, paused=paused)
        stopped, trials = [], []
        controller = SimpleNamespace(
            get_trials=lambda: trials,
            stop_trial=lambda t: (stopped.append(t.trial_id), setattr(t, "status", "TERMINATED")),
            _mark_trial_to_checkpoint=lambda t: None,
        )
        for trial_id in ("a", "b"):
            steps = len(reported.get(trial_id, []))
            trial = SimpleNamespace(
                trial_id=trial_id,
                status="PENDING",
                last_result={"training_iteration": steps} if steps else {},
            )
            trial.set_status = lambda status, t=trial: setattr(t, "status", status)
            trials.append(trial)
            scheduler.on_trial_add(controller, trial)
        return controller, trials, stopped

    # a waits at rung 1 (quorum 2, one result); b, restored before its first report, runs.
    scheduler = _scheduler(cfg)  # ComparingASHA, rungs at steps 10 and 20
    controller, (a, b), stopped = restored(scheduler, {"a": history(2.9)}, paused={"a"})
    assert (a.status, b.status) == ("PAUSED", "PENDING")  # Tune starts every PENDING trial
    assert scheduler.choose_trial_to_run(controller) is b
    b.status = "RUNNING"
    assert scheduler.choose_trial_to_run(controller) is None  # a still waits for b
    result = {"training_iteration": 1, "eval_loss": 2.5}  # rung 1 now has its quorum
    assert scheduler.on_trial_result(controller, b, result) == TrialScheduler.CONTINUE
    assert stopped == ["a"] and a.status == "TERMINATED"

    # b paused at rung 1 beside a's result (the quorum): promoted, it starts at once.
    scheduler = _scheduler(cfg)
    reported = {"a": history(2.9, 2.8), "b": history(2.7)}
    controller, (a, b), stopped = restored(scheduler, reported, paused={"b"})
    assert (a.status, b.status) == ("PENDING", "PENDING")
    assert scheduler.choose_trial_to_run(controller) is a  # the first PENDING: nothing waits
    a.status = "RUNNING"
    assert scheduler.choose_trial_to_run(controller) is b
    assert stopped == []
