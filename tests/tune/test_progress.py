"""The sweep's progress lines for trials of a resumed sweep (tune/progress.py)."""

from io import StringIO
from types import SimpleNamespace

from rich.console import Console

from tune.progress import SweepProgress


def test_a_restored_trial_keeps_its_number_and_one_without_a_report_starts_afresh():
    out = StringIO()
    progress = SweepProgress(Console(file=out, width=200), "eval_loss", 40, 3)
    # As tune/sweep.py's _renumber_progress leaves it for a resume: two trials Tune had made.
    progress.numbers, progress.started = {"a": 1, "b": 2}, 2
    trials = [
        SimpleNamespace(trial_id="a", config={"learning_rate": 1e-4}, last_result={"step": 20}),
        SimpleNamespace(trial_id="b", config={"learning_rate": 2e-4, "lora_r": 4}, last_result={}),
        SimpleNamespace(
            trial_id="c", config={"learning_rate": 3e-4, "lora_r": 16}, last_result=None
        ),
    ]
    for trial in trials:
        progress.on_trial_start(0, trials, trial)
    assert out.getvalue().splitlines() == [
        "▶ trial 1/3 resumes from step 20",
        "▶ trial 2/3 lr=2.00e-04 r=4",  # restored before its first report: not "from step 0"
        "▶ trial 3/3 lr=3.00e-04 r=16",  # new: the next number
    ]
