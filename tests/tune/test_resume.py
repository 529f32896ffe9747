"""The driver SIGKILLed mid-sweep, then `medtune sweep --resume`: nothing lost, nothing twice."""

import json
import os
import pickle
import signal
import subprocess
import time

import pandas as pd
import pytest

from tests.tune.conftest import MEDTUNE

pytestmark = pytest.mark.slow
STEPS, SAMPLES = 40, 4


def _progress(out):
    return {
        p.parent.name: pd.read_csv(p) for p in out.glob("trial_*/progress.csv") if p.stat().st_size
    }


def test_killed_driver_then_resume(tmp_path, model_cache):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = [
        "sweep",
        "model.name=tiny-random",
        "data.max_records=120",
        "scheduler.name=fifo",
        f"search.num_samples={SAMPLES}",
        f"train.max_steps={STEPS}",
        "train.eval_every=5",
        "train.per_device_batch_size=8",
        "run.name=killed",
        "--no-export",
    ]
    proc = subprocess.Popen(
        [MEDTUNE, *args],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = tmp_path / "results" / "killed"
    deadline = time.time() + 300
    while time.time() < deadline:
        done = [t for t, df in _progress(out).items() if df["step"].max() == STEPS]
        if done:
            break
        assert proc.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.2)
    else:
        pytest.fail("no trial finished within 300 s")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, mid-sweep
    proc.wait()
    before = _progress(out)
    finished = {t for t, df in before.items() if df["step"].max() == STEPS}
    assert len(finished) < SAMPLES, "every trial finished before the kill"

    resumed = subprocess.run(
        [MEDTUNE, "sweep", "--resume", "results/killed", "--no-export"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert len(summary["trials"]) == SAMPLES
    assert summary["errored"] == 0
    assert all(t["last_step"] == STEPS for t in summary["trials"])
    after = _progress(out)
    assert len(after) == SAMPLES
    for trial, df in after.items():
        steps = list(df["step"])
        assert steps == sorted(set(steps)), f"{trial} restarted: {steps}"
        if trial in finished:  # finished before the kill: not run again
            assert steps == list(before[trial]["step"])
    # The searcher's own state came back too: one finished Optuna trial per Tune trial.
    # Each run of the experiment writes its own file, named by its start time; the resumed
    # run's is the latest name (mtimes are all the final sync's).
    state = max(out.glob("searcher-state-*.pkl"), key=lambda p: p.name)
    searcher = pickle.loads(state.read_bytes())
    study = searcher["_ot_study"] if isinstance(searcher, dict) else searcher._ot_study
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == SAMPLES, states
