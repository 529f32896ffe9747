"""Ctrl-C during `medtune sweep`: the sweep stops, says so at once and how to go on, exports
nothing, and exits 130; its trial is `unfinished` (not "stopped early"), export refuses it,
the dashboard shows it interrupted, and `medtune sweep --resume` trains it to its end. Ctrl-C
during that resume's export (the confirmation runs) stops the export: exit 130, nothing
exported, no confirmation kept to be reused. The signal goes to the driver's whole process
group, as a terminal sends it. One trial (one trial process per run: each costs ~5 CPU-s).
SIGTERM takes the same path, checked on a Tune run of a trainable that only counts; sent to the
whole process group, it stops the sweep's own Ray too, and the sweep quits instead of waiting
for it."""

import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from tests.tune.conftest import kill_session, start_medtune
from tune.dashboard import render_page
from tune.errors import UserError
from tune.export import export_best
from tune.sweep_state import read_sweep

pytestmark = pytest.mark.slow
STEPS, EVERY, SAMPLES = 160, 20, 1
ARGS = [
    "model.name=tiny-random",
    "data.max_records=120",
    "scheduler.name=fifo",  # no trial ends early but by Ctrl-C
    f"search.num_samples={SAMPLES}",
    f"train.max_steps={STEPS}",
    f"train.eval_every={EVERY}",
    "train.per_device_batch_size=8",
    "ray.dashboard=false",
    "export.confirm_top_k=1",
    "export.confirm_seeds=1",
    "run.name=stopped",
]


def _first_evaluation(proc: subprocess.Popen, out: Path, log: Path, trials="trial_*") -> None:
    deadline = time.monotonic() + 240
    while not any(p.stat().st_size for p in out.glob(f"{trials}/progress.csv")):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no evaluation within 240 s"
        time.sleep(0.1)


def _sweep_stopped_by(signum: int, tmp_path: Path) -> tuple[Path, str]:
    """`medtune sweep` (ARGS) with `signum` sent to its whole process group after its first
    evaluation: its results folder and its output, once it has exited 130."""
    out = tmp_path / "results" / "stopped"
    log = tmp_path / "sweep.log"
    proc = start_medtune(["sweep", *ARGS], tmp_path, log)
    try:
        _first_evaluation(proc, out, log)
        os.killpg(proc.pid, signum)
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        kill_session(proc.pid)
    return out, log.read_text()


def test_ctrl_c_stops_the_sweep_which_resumes_and_then_its_export(tmp_path, model_cache):
    out, text = _sweep_stopped_by(signal.SIGINT, tmp_path)
    assert f"Stopping the sweep; its state is saved for `medtune sweep --resume {out}`" in text
    assert "Sweep interrupted: " in text and "Sweep done" not in text, text[-3000:]
    assert f"Nothing exported. Go on with: medtune sweep --resume {out}" in text
    assert "Traceback" not in text and "Trials did not complete" not in text, text[-3000:]
    assert not (out / "export").exists()

    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["interrupted"] is True
    statuses = [t["status"] for t in summary["trials"]]
    assert "unfinished" in statuses and "error" not in statuses, summary
    assert summary["unfinished"] == SAMPLES - statuses.count("completed")
    assert summary["stopped_early"] == 0  # FIFO: none but Ctrl-C ended a trial early
    assert all(t["last_step"] < STEPS for t in summary["trials"] if t["status"] == "unfinished")

    with pytest.raises(UserError, match="was interrupted with .* unfinished.*--resume"):
        export_best(out, Console(quiet=True))
    # A trial picked by hand exports from the interrupted sweep: its checkpoints are kept.
    picked = next(t for t in summary["trials"] if t["evaluations"])["trial_id"]
    by_hand = export_best(out, Console(quiet=True), out=tmp_path / "by-hand", trial=picked)
    assert by_hand["chosen_by"] == "--trial" and by_hand["best_trial"]["trial_id"] == picked
    assert (tmp_path / "by-hand" / "adapter").is_dir() and not (out / "export").exists()
    state = read_sweep(out)
    assert state.finished and state.interrupted
    assert state.counts["unfinished"] == summary["unfinished"]
    assert state.counts["running"] == state.counts["pending"] == 0
    page = render_page(state, live=False, nonce="n", charts={})
    assert '<span id="sweep-status">interrupted</span>' in page
    assert f"go on with <code>medtune sweep --resume {out}</code>" in page
    assert f"medtune export {out}" not in page  # export refuses it: no hint to run it

    log = tmp_path / "resumed.log"
    resumed = start_medtune(["sweep", "--resume", str(out)], tmp_path, log)
    try:
        # While it runs, the stopped run's summary is gone: the dashboard shows it live again.
        while (out / "sweep_summary.json").exists() and resumed.poll() is None:
            time.sleep(0.05)
        assert resumed.poll() is None, "the resumed sweep ended before its old summary went"
        assert not read_sweep(out).finished
        # Its export retrains the best configuration (export.confirm_top_k=1): stopped there.
        _first_evaluation(resumed, out, log, trials="confirm/confirm_*")
        os.killpg(resumed.pid, signal.SIGINT)
        assert resumed.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        kill_session(resumed.pid)
    text = log.read_text()
    # The restored trial keeps its number (the callback was pickled before it started).
    assert re.search(r"▶ trial 1/1 resumes from step [1-9]\d*\n", text), text[:2000]
    assert "trial 2/1" not in text
    assert "Sweep done: 1 trials, 0 stopped early, 0 errored" in text, text[-3000:]
    assert "Stopping the confirmation runs; nothing is exported (Ctrl-C again quits" in text
    assert (
        f"Export stopped during the confirmation runs; nothing exported. `medtune export {out}` "
        "runs them again." in text
    )
    assert "Traceback" not in text, text[-3000:]
    assert not (out / "export").exists() and not (out / "confirm_summary.json").exists()
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["interrupted"] is False and summary["unfinished"] == 0
    assert [t["status"] for t in summary["trials"]] == ["completed"] * SAMPLES
    assert all(t["last_step"] == STEPS for t in summary["trials"])
    assert not read_sweep(out).interrupted


def _sigterm_at_third_report():
    """A Tune callback that sends this process SIGTERM, as a job scheduler or Kubernetes sends
    it to the driver, when the trial's third report arrives."""
    from ray.tune import Callback

    class SigtermAt(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if result["i"] == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    return SigtermAt()


def _counting(config):
    from ray import tune as ray_tune

    for i in range(300):
        ray_tune.report({"i": i})
        time.sleep(0.05)


def test_sigterm_stops_a_tune_run_as_ctrl_c_does_and_a_second_one_quits(ray_2_cpus, tmp_path):
    """SIGTERM to the driver takes the Ctrl-C path above: Tune stops its run gracefully (the
    state saved for a resume), the stop is said at once; Ray's own handler (which exits at
    once) is back after the run. A real Tune run of a trainable that only counts."""
    import io

    from ray import tune as ray_tune

    from tune.interrupt import signals_stop_tune

    rays_handler = signal.getsignal(signal.SIGTERM)
    shown = io.StringIO()
    with signals_stop_tune(Console(file=shown), "Stopping the run") as stop:
        grid = ray_tune.Tuner(
            _counting,
            run_config=ray_tune.RunConfig(
                storage_path=str(tmp_path),
                name="counting",
                callbacks=[_sigterm_at_third_report()],
                verbose=0,
            ),
        ).fit()
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):  # a second SIGTERM quits at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs within this
    assert signal.getsignal(signal.SIGTERM) is rays_handler
    assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
    assert "Stopping the run (SIGTERM received; another quits at once)" in shown.getvalue()
    (result,) = grid
    assert result.error is None and 2 <= result.metrics["i"] < 299  # stopped, not finished
    assert ray_tune.Tuner.can_restore(str(tmp_path / "counting"))


def test_sigterm_to_the_whole_process_group_quits_instead_of_hanging(tmp_path, model_cache):
    """`timeout`, Slurm's scancel and systemd send SIGTERM to every process of the job: the
    Ray that `medtune sweep` started here stops too, and Tune's graceful stop then waited for
    its raylet (until killed, or 60 s if the GCS went too, then exit 1). medtune sees Ray's
    processes end and quits: exit 130, the state as last saved (a killed driver's, which
    `--resume` finishes: tests/tune/test_resume.py)."""
    out, text = _sweep_stopped_by(signal.SIGTERM, tmp_path)
    # The watcher may quit before the main thread's handler has run (its line is optional).
    assert "SIGTERM received, and Ray's processes on this machine were stopped by the same " in text
    assert "Traceback" not in text, text[-3000:]
    assert not (out / "export").exists()
    assert read_sweep(out).counts["completed"] == 0


WATCHED = """
import signal, subprocess, sys, time
from rich.console import Console
import tune.interrupt as interrupt

ray_process = subprocess.Popen(["sleep", "600"])  # stands in for one of Ray's processes
interrupt._local_ray_processes = lambda: [ray_process]
# As Tune listens for its stop signal while it runs: the handler, if it ran, would pass the
# stop on (and print its line) instead of quitting with KeyboardInterrupt.
signal.signal(signal.SIGUSR1, lambda *_: print("SIGUSR1", flush=True))
with interrupt.signals_stop_tune(Console(), "Stopping the run"):
    # As in a call into Ray that never returns: the main thread takes no signal and runs no
    # Python handler; the watcher's thread, started before this, takes it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    print("blocked", flush=True)
    time.sleep(300)
"""


# clock_nanosleep, what time.sleep waits in, by architecture (Linux's syscall tables).
SLEEP_SYSCALL = {"x86_64": "230", "aarch64": "115"}


def _main_thread_sleeps(pid: int) -> bool:
    """Whether the process's main thread waits in clock_nanosleep (its time.sleep)."""
    try:
        syscall = Path(f"/proc/{pid}/task/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return False
    return syscall == SLEEP_SYSCALL[platform.machine()]


@pytest.mark.skipif(
    platform.machine() not in SLEEP_SYSCALL,
    reason="knows clock_nanosleep's number on x86_64 and aarch64 only",
)
def test_a_group_sigterm_quits_while_the_main_thread_cannot_run_its_handler(tmp_path):
    """The race the test above can lose: the signal reaches the driver's main thread while it
    waits in Ray's C code, so medtune's handler does not run before Ray's core worker ends the
    process (exit 1) for its lost raylet. The watcher learns of the signal from the wakeup fd
    instead, and quits once one of Ray's processes has ended."""
    script = tmp_path / "watched.py"
    script.write_text(WATCHED)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout.readline() == "blocked\n"
        # Signalled before the main thread is in its sleep, it would run the handler between
        # two bytecodes on the way there (two clean-clone runs did: -2 for want of a SIGUSR1
        # handler, then the handler's line): the case under test is the call it never leaves.
        deadline = time.monotonic() + 30
        while not _main_thread_sleeps(proc.pid):
            assert time.monotonic() < deadline, "the script's main thread never slept"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)  # the script and its "Ray" process, as `timeout` does
        code = proc.wait(timeout=60)
    finally:
        kill_session(proc.pid)
    text = proc.stdout.read()
    assert code == 130, (code, text)
    assert "SIGTERM received, and Ray's processes on this machine were stopped by the same " in text
    assert "Stopping the run" not in text and "SIGUSR1" not in text  # the handler never ran
