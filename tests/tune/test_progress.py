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


def _waiting_trial() -> SimpleNamespace:
    """A trial ASHA holds at its first rung (step 10), best eval_loss 2.5."""
    return SimpleNamespace(
        trial_id="a",
        config={"learning_rate": 1e-4},
        last_result={"step": 10},
        status="PAUSED",
        metric_analysis={"eval_loss": {"min": 2.5}},
    )


def test_a_waiting_trial_asha_stops_is_said_after_the_result_that_stopped_it():
    """Tune gives a result to the scheduler before the callbacks: ASHA stops the trial that
    waited at the rung (its completion comes first), then the progress hears of the result
    that outranked it. The lines keep the order in which things happened."""
    out = StringIO()
    progress = SweepProgress(Console(file=out, width=200), "eval_loss", 40, 2)
    a = _waiting_trial()
    b = SimpleNamespace(
        trial_id="b", config={"learning_rate": 2e-4}, last_result=None, status="RUNNING"
    )
    for trial in (a, b):
        progress.on_trial_start(0, [a, b], trial)
    progress.on_step_end(0, [a, b])  # a waits at its rung
    progress.on_trial_complete(0, [a, b], a)  # ASHA, on b's result: a stops
    result = {"step": 10, "eval_loss": 2.25, "train_loss": 2.3, "tokens_per_second": 500.0}
    progress.on_trial_result(0, [a, b], b, result)
    assert out.getvalue().splitlines()[2:] == [
        "‖ trial 1/2 waits at step 10 to be compared",
        "  trial 2/2 step   10/40 eval_loss 2.2500  train_loss 2.3000  500 tok/s",
        "✓ trial 1/2 stopped early by the scheduler at step 10, best eval_loss 2.5000",
    ]


def test_a_held_line_is_printed_by_the_end_of_the_sweep():
    out = StringIO()
    progress = SweepProgress(Console(file=out, width=200), "eval_loss", 40, 1)
    a = _waiting_trial()
    progress.on_trial_start(0, [a], a)
    progress.on_step_end(0, [a])
    progress.on_trial_complete(0, [a], a)
    progress.on_experiment_end([a])
    assert out.getvalue().splitlines()[-1].startswith("✓ trial 1/1 stopped early")
