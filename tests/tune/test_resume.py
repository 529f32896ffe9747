"""The driver SIGKILLed at random points, twice, each time resumed with `medtune sweep
--resume`: at most one evaluation interval lost per trial and kill, nothing twice. The last
resume also extends the unfinished sweep by one trial, sampled by the restored Optuna study
(tests/tune/test_storage.py extends a finished one).

Each cycle waits for the k-th evaluation its run adds (a checkpoint a trial uploaded), waits a
seeded random part of an interval more, and SIGKILLs the driver alone; the Ray it started
follows it (trial workers within seconds, during which an orphaned worker may upload one more
checkpoint that no driver asked for and that no resume uses). What every trial had reported
at the kill (its newest checkpoint: progress.csv in the results folder is Tune's view and may
lag) is compared with where the next run resumed it, read from progress.csv
(`iterations_since_restore` counts the reports since a run restored the trial). The figures,
steps re-run per trial and kill, are printed (`pytest -s`) for the README.
"""

import json
import os
import pickle
import random
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from search_spaces import load_space
from tests.conftest import read_progress
from tests.tune.conftest import kill_session, session_processes, start_medtune
from trainables.scratch import PREFIX
from tune.sweep_state import read_sweep

pytestmark = pytest.mark.slow
STEPS, EVERY, SAMPLES = 30, 5, 3
KILLS, SEED = 2, 20261125
# Evaluations a run adds before its kill, first run then resumes, and the extra wait: up to
# about one interval of tiny-random training, so kills land mid-interval and mid-trial.
FIRST_EVALS, RESUMED_EVALS, MAX_DELAY_S = (2, 4), (1, 2), 0.6
ARGS = [
    "model.name=tiny-random",
    "data.max_records=120",
    "scheduler.name=fifo",
    f"search.num_samples={SAMPLES}",
    f"train.max_steps={STEPS}",
    f"train.eval_every={EVERY}",
    "train.per_device_batch_size=8",
    "ray.dashboard=false",
    # Tune by itself saves its experiment state once a trial has checkpointed this many
    # times (or every 10 s), so a kill could lose that many intervals; medtune has it saved
    # at every checkpoint (tune/controller.py), which a keep above 2 makes this test check.
    "run.checkpoints_to_keep=3",
    "run.name=killed",
]


@pytest.fixture
def drivers():
    """Start `medtune sweep` drivers, each in its own session (with the Ray it starts: GCS,
    raylet, agents and trial workers); on teardown kill what is left of each session."""
    procs = []

    def start(args, cwd: Path, log: Path) -> subprocess.Popen:
        proc = start_medtune(["sweep", *args], cwd, log)  # our own Ray, never another's
        proc.log = log
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kill_session(proc.pid)


def _checkpoint_steps(trial: Path) -> set[int]:
    """Steps of the checkpoints a trial uploaded (skipping one caught mid-upload)."""
    steps = set()
    for state in trial.glob("checkpoint_*/trainer_state.json"):
        try:
            steps.add(json.loads(state.read_text())["global_step"])
        except (OSError, ValueError, KeyError):
            pass
    return steps


def _progress(out: Path) -> dict[str, pd.DataFrame]:
    return {
        p.parent.name: read_progress(p)
        for p in out.glob("trial_*/progress.csv")
        if p.stat().st_size
    }


def _reported(out: Path) -> dict[str, int]:
    """Each trial's last reported step: its newest checkpoint or progress row."""
    rows = _progress(out)
    last = {}
    for trial in out.glob("trial_*"):
        steps = _checkpoint_steps(trial)
        if trial.name in rows:
            steps |= set(rows[trial.name]["step"])
        last[trial.name] = max(steps, default=0)
    return last


def _scratch(out: Path) -> set[Path]:
    """The scratch folders of the sweep's trials in the temporary directory (trainables/
    scratch.py): a trial killed mid-run leaves its own, with its last checkpoint."""
    tmp = Path(tempfile.gettempdir())
    return {p for t in out.glob("trial_*") for p in tmp.glob(f"{PREFIX}{t.name[6:]}-*")}


def _finished(out: Path) -> set[str]:
    """Trials finished in Tune's newest experiment state (what --resume reads)."""
    state = max(out.glob("experiment_state-*.json"), key=lambda p: p.name)
    trials = [json.loads(t) for t, _ in json.loads(state.read_text())["trial_data"]]
    return {f"trial_{t['trial_id']}" for t in trials if t["status"] == "TERMINATED"}


def _wait_for_evaluations(proc, out: Path, before: dict[str, int], k: int) -> None:
    """Until the run has added k evaluations beyond what each trial had reported before it."""
    seen: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 240
    while len(seen) < k:
        assert proc.poll() is None, (
            f"the sweep ended (exit {proc.returncode}) before its kill: "
            + proc.log.read_text()[-3000:]
        )
        assert time.monotonic() < deadline, f"no {k} new evaluations within 240 s"
        for trial in out.glob("trial_*"):
            new = {s for s in _checkpoint_steps(trial) if s > before.get(trial.name, 0)}
            seen |= {(trial.name, s) for s in new}
        time.sleep(0.1)


def _kill_driver(proc, out: Path) -> tuple[float, dict[str, int]]:
    """SIGKILL the driver alone; return the kill's time and what each trial had reported by
    then, once the Ray it started has gone with it (GCS and raylet at once, trial workers,
    each in its own process group, within seconds: none may still upload a checkpoint when
    the next run starts; until then an orphaned worker may finish one more interval, which
    no driver asked for). Ray's agents outlive the raylet: they are killed with the rest."""
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.time()
    reported = _reported(out)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(pgid != proc.pid for _, pgid in session_processes(proc.pid)):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    kill_session(proc.pid)
    return killed, reported


def test_killed_driver_several_times_then_resume(tmp_path, model_cache, drivers):
    rng = random.Random(SEED)
    t0 = time.monotonic()
    out = tmp_path / "results" / "killed"
    cycles = []  # per kill: its time, what each trial had reported, which trials had finished
    for cycle in range(KILLS):
        args = ARGS if cycle == 0 else ["--resume", "results/killed"]
        # What the trials had on disk when this run started: orphans' checkpoints included.
        before = {**cycles[-1]["reported"], **cycles[-1]["orphaned"]} if cycles else {}
        started = time.monotonic()
        proc = drivers([*args, "--no-export"], tmp_path, tmp_path / f"run{cycle}.log")
        k = rng.randint(*(FIRST_EVALS if cycle == 0 else RESUMED_EVALS))
        _wait_for_evaluations(proc, out, before, k)
        delay = rng.uniform(0, MAX_DELAY_S)
        time.sleep(delay)
        killed, reported = _kill_driver(proc, out)
        # The dashboard's reading: no summary, no process on it, nothing left "running".
        gone = read_sweep(out)
        assert gone.driver_gone and gone.counts["running"] == gone.counts["pending"] == 0
        cycles.append(
            {
                "at": killed,
                "after_s": time.monotonic() - started,
                "evaluations": k,
                "delay_s": delay,
                "reported": reported,
                "orphaned": {t: s for t, s in _reported(out).items() if s > reported.get(t, 0)},
                "finished": _finished(out),  # also: the state Tune left is readable
                "scratch": _scratch(out),
            }
        )
        print(f"\nkill {cycle + 1} at {time.monotonic() - t0:5.1f} s", end="", flush=True)
    assert any(0 < s < STEPS for c in cycles for s in c["reported"].values()), (
        "no kill landed mid-trial"
    )

    # Lowering num_samples is refused (exit 2) and changes nothing; raising it extends.
    lower = drivers(
        ["--resume", "results/killed", f"search.num_samples={SAMPLES - 1}"],
        tmp_path,
        tmp_path / "lower.log",
    )
    assert lower.wait(timeout=120) == 2
    assert "can only raise it" in (tmp_path / "lower.log").read_text()
    final_at = time.time()
    final = drivers(
        ["--resume", "results/killed", "--no-export", f"search.num_samples={SAMPLES + 1}"],
        tmp_path,
        tmp_path / "final.log",
    )
    try:
        final.wait(timeout=300)
    finally:
        log = (tmp_path / "final.log").read_text()
    print(f"\nfinal run done at {time.monotonic() - t0:5.1f} s", flush=True)
    assert final.returncode == 0, log[-3000:]
    assert f"Extending sweep killed to {SAMPLES + 1} trials" in log
    # Every trial ran its budget (FIFO), counted once over the kills; the time is this run's.
    budget = (SAMPLES + 1) * STEPS
    assert re.search(rf"; {budget} of {budget} steps trained, (\d+ min )?\d+ s this run\.", log)
    assert f"num_samples: {SAMPLES + 1}" in (out / "medtune.yaml").read_text()
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert len(summary["trials"]) == SAMPLES + 1
    # The start-up trials are the stratified points (search.seed 0), each run once across
    # kills and restores: the restored study does not enqueue them again for the extension.
    configs = [t["config"] for t in summary["trials"]]
    points = load_space("lora_default").stratified(SAMPLES, seed=0)
    assert [configs.count(p) for p in points] == [1] * SAMPLES, (points, configs)
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == SAMPLES + 1
    assert summary["errored"] == 0
    assert all(t["last_step"] == STEPS for t in summary["trials"])
    assert len(list(out.glob("trial_*"))) == SAMPLES + 1
    after = _progress(out)
    assert len(after) == SAMPLES + 1
    # The trials no run had started before the last one: the extension among them. Each
    # ran its steps once.
    fresh = [t for t, df in after.items() if df["timestamp"].min() >= int(final_at)]
    assert fresh
    for trial in fresh:
        assert list(after[trial]["step"]) == list(range(EVERY, STEPS + 1, EVERY)), trial

    # Per kill and trial: where it resumed against what it had reported before the kill.
    lines, worst = [], 0
    ends = [c["at"] for c in cycles[1:]] + [time.time() + 1]
    for i, (cycle, end) in enumerate(zip(cycles, ends, strict=True), start=1):
        lost = {}
        for trial, df in after.items():
            if trial not in cycle["reported"]:  # no folder yet at this kill: nothing to lose
                continue
            last = cycle["reported"][trial]
            later = df[df["timestamp"] > cycle["at"]]
            if trial in cycle["finished"]:  # finished before the kill: never run again
                assert later.empty, f"{trial} finished before kill {i} and ran again"
                continue
            if later.empty:  # nothing left to run (its last step was already in hand)
                assert last == STEPS, f"{trial} never went on after kill {i}"
                continue
            row = later.iloc[0]
            resumed = int(row["step"]) - EVERY * int(row["iterations_since_restore"])
            assert resumed >= last - EVERY, (
                f"kill {i}: {trial} had reported step {last}, resumed from step {resumed}"
            )
            if row["timestamp"] < end:  # resumed by the next run, not after a later kill
                lost[trial] = (last, resumed)
        rerun = {t: max(0, last - resumed) for t, (last, resumed) in lost.items()}
        worst = max(worst, *rerun.values(), 0)
        lines.append(
            f"kill {i} ({cycle['after_s']:.1f} s into its run, {cycle['evaluations']} new "
            f"evaluation(s) + {cycle['delay_s']:.2f} s; {len(cycle['finished'])} trial(s) done): "
            + (
                ", ".join(
                    f"{t[6:]} reported {last}, resumed {resumed}: {rerun[t]} steps re-run"
                    + (
                        f" (+{cycle['orphaned'][t] - last} by its orphaned worker after the kill)"
                        if t in cycle["orphaned"]
                        else ""
                    )
                    for t, (last, resumed) in sorted(lost.items())
                )
                or "no trial resumed by the next run"
            )
        )
    print(
        f"\n{KILLS} kills (seed {SEED}), eval_every={EVERY}: at most {worst} steps re-run per "
        "trial and kill\n" + "\n".join(lines)
    )

    for trial, df in after.items():
        steps, since = list(df["step"]), list(df["iterations_since_restore"])
        assert steps[-1] == STEPS, f"{trial} ended at step {steps[-1]}"
        for prev, step, n in zip(steps, steps[1:], since[1:], strict=False):
            # Steps rise; a resume may repeat at most the one interval it lost.
            assert step > prev or (n == 1 and prev - (step - EVERY) <= EVERY), (
                f"{trial} restarted: {steps}"
            )

    # The searcher's own state came back too: one finished Optuna trial per Tune trial, the
    # extension's included.
    # Each run of the experiment writes its own file, named by its start time; the resumed
    # run's is the latest name (mtimes are all the final sync's).
    state = max(out.glob("searcher-state-*.pkl"), key=lambda p: p.name)
    searcher = pickle.loads(state.read_bytes())
    study = searcher["_ot_study"] if isinstance(searcher, dict) else searcher._ot_study
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == SAMPLES + 1, states
    assert len(states) == SAMPLES + 1, states

    # The killed trials' scratch folders were removed by the trials that ran after them.
    assert any(c["scratch"] for c in cycles), "no killed trial left a scratch folder"
    assert _scratch(out) == set()
