"""What an export folder must hold to be loaded: light (no torch), so `medtune generate` and
`medtune serve` refuse a wrong folder in a fraction of a second, before torch and Ray load."""

from __future__ import annotations

from pathlib import Path

from tune.errors import UserError

__all__ = ["PROMPT_FILE", "check_export"]

PROMPT_FILE = "medtune_prompt.json"  # the prompt template and system prompt it was trained with


def check_export(model_dir: Path) -> None:
    """Raise UserError unless `model_dir` holds a model config and medtune's prompt file."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file() or not (model_dir / PROMPT_FILE).is_file():
        raise UserError(
            f"{model_dir}: not a medtune export (needs config.json and {PROMPT_FILE}); "
            "give the folder `medtune export` wrote, e.g. results/<name>/export"
        )
