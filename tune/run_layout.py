"""Where a sweep's results folder is, and whether a new sweep may take its run.name: light (no
torch; Ray's storage code only for a URI run.storage), so `medtune sweep` refuses a taken name
in a second, before torch and Ray load."""

from __future__ import annotations

from pathlib import Path

from tune.config import SweepConfig, is_uri
from tune.errors import UserError
from tune.redact import redact_text

__all__ = ["check_new_run", "results_dir"]


def results_dir(cfg: SweepConfig) -> Path:
    """The results folder on this machine (with a URI run.storage: the driver's copy)."""
    root = cfg.run.local_dir if is_uri(cfg.run.storage) else cfg.run.storage
    return Path(root).expanduser().resolve() / cfg.run.name


def check_new_run(cfg: SweepConfig, overwrite: bool) -> None:
    """Refuse a run.name whose results exist here or under a URI run.storage, unless
    `overwrite`. `cfg` must have its run.name set (`SweepConfig.with_run_name`)."""
    out = results_dir(cfg)
    if out.exists() and not overwrite:
        raise UserError(
            f"run.name={cfg.run.name}: {out} already exists; choose another run.name, finish "
            f"it with `medtune sweep --resume {out}`, or pass --overwrite to replace it"
        )
    if is_uri(cfg.run.storage) and not overwrite:
        from tune.storage import run_exists, run_uri

        if run_exists(run_uri(cfg.run.storage, cfg.run.name)):
            raise UserError(
                f"run.name={cfg.run.name}: {cfg.run.name} already exists under run.storage="
                f"{redact_text(cfg.run.storage)}; choose another run.name, or pass --overwrite "
                "to replace it"
            )
