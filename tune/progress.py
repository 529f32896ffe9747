"""Readable sweep progress: one line per trial event, instead of Ray's status tables."""

from __future__ import annotations

from pathlib import Path

from ray.tune import Callback
from rich.console import Console
from rich.markup import escape

from tune.console import make_console
from tune.redact import redact_text
from tune.sweep_state import trial_error_line

__all__ = ["SweepProgress", "format_params"]


def format_params(config: dict) -> str:
    parts = []
    for key, short in (
        ("learning_rate", "lr"),
        ("weight_decay", "wd"),
        ("lora_r", "r"),
        ("lora_alpha", "alpha"),
        ("lora_dropout", "dropout"),
        ("candidate", "candidate"),  # confirmation runs: an index into the top-k
        ("seed", "seed"),
    ):
        if key in config:
            v = config[key]
            parts.append(f"{short}={v:.2e}" if key == "learning_rate" else f"{short}={v:.3g}")
    return " ".join(parts)


class SweepProgress(Callback):
    """Prints trial starts, evaluations, early stops, completions and errors."""

    def __init__(
        self, console: Console, metric: str, max_steps: int, num_samples: int, mode: str = "min"
    ):
        self.console, self.metric, self.max_steps = console, metric, max_steps
        self.mode = mode  # "max" for eval_accuracy: the best is the highest
        self.num_samples = num_samples
        self.started = 0
        self.numbers: dict[str, int] = {}
        self.waiting: set[str] = set()
        # The line of a waiting trial ASHA stopped, held until the result that decided it (the
        # scheduler sees a result before the callbacks do) has its own line.
        self.held: list[str] = []

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks into the experiment state; a console holds locks.
        return {**self.__dict__, "console": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.console = make_console()

    def _name(self, trial) -> str:
        return f"trial {self.numbers.get(trial.trial_id, '?')}/{self.num_samples}"

    def on_trial_start(self, iteration, trials, trial, **info):
        step = (trial.last_result or {}).get("step", 0)
        if trial.trial_id in self.numbers and step:  # a paused one promoted, or restored
            self.waiting.discard(trial.trial_id)
            self.console.print(f"[bold]▶ {self._name(trial)}[/] resumes from step {step}")
            return
        if trial.trial_id not in self.numbers:
            self.started += 1
            self.numbers[trial.trial_id] = self.started
        # New, or restored before its first report (a resumed sweep): it starts afresh.
        self.console.print(f"[bold]▶ {self._name(trial)}[/] {format_params(trial.config)}")

    def _print_held(self) -> None:
        for line in self.held:
            self.console.print(line)
        self.held.clear()

    def on_step_end(self, iteration, trials, **info):
        self._print_held()
        # Ray has no pause hook; a trial turns PAUSED only when ASHA holds it to be compared.
        for trial in trials:
            if trial.status == "PAUSED" and trial.trial_id not in self.waiting:
                self.waiting.add(trial.trial_id)
                step = (trial.last_result or {}).get("step", 0)
                self.console.print(
                    f"[yellow]‖ {self._name(trial)}[/] waits at step {step} to be compared"
                )

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.console.print(
            f"  {self._name(trial)} step {result['step']:>4}/{self.max_steps} "
            f"{self.metric} {result[self.metric]:.4f}  train_loss {result['train_loss']:.4f}  "
            f"{result['tokens_per_second']:.0f} tok/s"
        )
        self._print_held()

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        step = last.get("step", 0)
        how = "finished" if step >= self.max_steps else "stopped early by the scheduler"
        best = trial.metric_analysis.get(self.metric, {}).get(getattr(self, "mode", "min"))
        best_text = f", best {self.metric} {best:.4f}" if best is not None else ""
        line = f"[green]✓ {self._name(trial)}[/] {how} at step {step}{best_text}"
        if trial.trial_id in self.waiting:
            self.held.append(line)
        else:
            self.console.print(line)

    def on_experiment_end(self, trials, **info):
        self._print_held()

    def on_trial_error(self, iteration, trials, trial, **info):
        # Tune has just written the error beside the driver; `trial.get_error()` reads the
        # storage copy, which only the next sync writes (it read none in every sweep here).
        local = Path(trial.error_file) if trial.error_file else None
        error = local.read_text(errors="replace") if local and local.is_file() else None
        error = error or trial.get_error()
        line = trial_error_line(str(error)) if error else "unknown error"
        self.console.print(f"[red]✗ {self._name(trial)} errored:[/] {escape(redact_text(line))}")
