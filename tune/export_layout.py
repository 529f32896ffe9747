"""What export needs of a results folder and what an export folder must hold: light (no
torch), so `medtune export`, `generate` and `serve` refuse a wrong folder in a fraction of a
second, before torch and Ray load."""

from __future__ import annotations

import json
from pathlib import Path

from tune.errors import UserError
from tune.run_lock import holder

__all__ = ["PROMPT_FILE", "check_export", "check_sweep_finished"]

PROMPT_FILE = "medtune_prompt.json"  # the prompt template and system prompt it was trained with


def check_export(model_dir: Path) -> None:
    """Raise UserError unless `model_dir` holds a model config and medtune's prompt file."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file() or not (model_dir / PROMPT_FILE).is_file():
        raise UserError(
            f"{model_dir}: not a medtune export (needs config.json and {PROMPT_FILE}); "
            "give the folder `medtune export` wrote, e.g. results/<name>/export"
        )


def check_trial(results: Path, trial_id: str) -> None:
    """Refuse a `--trial` that names none of the sweep's trials (their `trial_<id>` folders)."""
    trials = sorted(p.name.removeprefix("trial_") for p in results.glob("trial_*") if p.is_dir())
    if trial_id not in trials:
        raise UserError(
            f"--trial {trial_id}: no such trial in {results}; its trials: "
            f"{', '.join(trials) or 'none yet'} (`medtune list` and the dashboard show them)"
        )


def check_sweep_finished(results: Path) -> None:
    """Refuse a sweep that has not ended: its best trial so far is not the sweep's best."""
    summary = results / "sweep_summary.json"
    if not summary.is_file():
        running = holder(results)
        if running:
            raise UserError(
                f"{results}: the sweep has not finished (no sweep_summary.json): {running} is "
                "working on it; export once it has ended (a sweep exports its best at its end "
                "unless run with --no-export)"
            )
        raise UserError(
            f"{results}: the sweep has not finished (no sweep_summary.json) and no medtune "
            "process is working on it (its driver was killed, or its machine restarted); go "
            f"on with `medtune sweep --resume {results}`, which exports at its end"
        )
    data = json.loads(summary.read_text())
    if data.get("interrupted"):
        raise UserError(
            f"{results}: the sweep was interrupted with {data.get('unfinished', '?')} trials "
            f"unfinished; finish it with `medtune sweep --resume {results}`, then export"
        )
