"""`medtune list [results]`: the sweeps in a results folder, newest first, one row each.

Read from the files alone, as the dashboard reads them (`tune.sweep_state`), so it works on
a copied folder and while sweeps run. A sweep folder that cannot be read shows its reason in
its row instead of hiding the others.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tune.config import is_uri
from tune.errors import USER_ERRORS, UserError
from tune.sweep_state import SweepState, age, read_sweep

__all__ = ["find_sweeps", "list_sweeps", "remote_sweep_rows", "sweep_row", "sweep_rows"]


def find_sweeps(root: Path) -> list[Path]:
    """`root` itself if it is a sweep's folder, else its sub-folders that are."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UserError(
            f"{root}: {what}; give the folder sweeps write to (run.local_dir, default results)"
        )
    if (root / "medtune.yaml").is_file():
        return [root]
    return sorted(p for p in root.iterdir() if (p / "medtune.yaml").is_file())


def sweep_row(state: SweepState) -> dict:
    """What one row shows of a sweep, as plain data (also `medtune list --json`)."""
    counts = state.counts
    best = state.best_trial()
    best_eval = best.best(state.mode) if best else None
    test = None
    if state.export:
        # Export names the losses test_loss, test_perplexity, and a decision task's scores
        # accuracy and macro_f1: the test metric that matches the sweep's validation metric.
        name = state.metric.removeprefix("eval_")
        tuned = state.export.get("tuned", {})
        key = f"test_{name}" if f"test_{name}" in tuned else name
        test = {
            "metric": key,
            "tuned": tuned.get(key),
            "base": state.export.get("base", {}).get(key),
            # The sweep's trials when exported (absent before 2026-12-02): fewer than it has
            # now when it was extended after the export.
            "of_trials": state.export.get("sweep_trials"),
        }
    return {
        "name": state.name,  # the sweep's run.name; `sweep_rows` puts its folder's name here
        "folder": state.folder,
        "status": state.status,
        "model": state.model,
        "data": state.data_source,
        "scheduler": state.scheduler,
        "trials": state.num_samples,
        "ended": sum(counts[s] for s in ("completed", "stopped", "errored")),
        "errored": counts["errored"],
        "steps_trained": state.steps_trained,
        "step_budget": state.num_samples * state.max_steps,
        "metric": state.metric,
        "best": best_eval.value if best_eval else None,
        "best_trial": best.trial_id if best else None,
        "test": test,
        "updated": state.updated,
    }


def sweep_rows(root: Path) -> list[dict]:
    """A row for each sweep under `root`, newest first, unreadable ones (with their `error`)
    first of all; each row's `name` is its folder's name, as commands take it."""
    rows = []
    for folder in find_sweeps(root):
        try:
            row = sweep_row(read_sweep(folder))
        except (OSError, *USER_ERRORS) as err:  # one broken folder hides no other
            row = {"error": str(err)}
        rows.append({**row, "name": folder.name, "folder": str(folder.absolute())})
    rows.sort(key=lambda r: r.get("updated", math.inf), reverse=True)
    return rows


def remote_sweep_rows(uri: str) -> list[dict]:
    """`sweep_rows` of the sweeps under a storage URI (or of the one sweep there), copied to
    this machine first without checkpoints, as `medtune dashboard <uri>` copies them (only
    what changed since the last copy); each row's `folder` is the sweep's URI, which
    `medtune dashboard`, `report` and `export` take."""
    from tune.redact import redact_text
    from tune.storage import copy_sweep, copy_sweeps, is_sweep_uri, run_uri

    if is_sweep_uri(uri):
        name = urlsplit(uri).path.rstrip("/").rsplit("/", 1)[-1]
        return [
            {**r, "name": name, "folder": redact_text(uri)} for r in sweep_rows(copy_sweep(uri))
        ]
    rows = sweep_rows(copy_sweeps(uri))
    return [{**r, "folder": redact_text(run_uri(uri, r["name"]))} for r in rows]


def list_sweeps(root: str, console: Console, as_json: bool = False) -> int:
    """Print the sweeps under `root` (a folder or a storage URI), newest first (unreadable
    ones first of all); return 0. A `root` that is not a folder raises `UserError` (exit 2)."""
    if is_uri(root):
        from tune.redact import redact_text

        rows, root = remote_sweep_rows(root), redact_text(root)
    else:
        rows = sweep_rows(Path(root))
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        console.print(f"No sweeps in {root} (a sweep's folder holds medtune.yaml).", markup=False)
        return 0
    if not console.is_terminal:
        # Without a terminal (a pipe, a log) rich would squeeze the table into 80 columns and
        # wrap its cells; there every row stays one line. A terminal gets it fitted to it.
        console = Console(file=console.file, highlight=False, soft_wrap=True, width=10_000)
    console.print(_table(rows, root))
    for r in rows:
        if "error" in r:
            console.print(f"{escape(r['name'])}: {escape(r['error'])}", soft_wrap=True)
    return 0


def _table(rows: list[dict], root: Path) -> Table:
    table = Table(
        title=f"Sweeps in {escape(str(root))}", title_justify="left", box=None, pad_edge=False
    )
    for column in ("sweep", "status", "model", "data", "trials", "steps", "best", "test"):
        table.add_column(column, justify="right" if column in ("trials", "steps") else "left")
    table.add_column("updated", justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(escape(r["name"]), "[red]unreadable[/] (below)", *[""] * 7)
            continue
        trials = f"{r['ended']}/{r['trials']}" + (
            f" ({r['errored']} errored)" if r["errored"] else ""
        )
        best = f"{r['metric']} {r['best']:.4f}" if r["best"] is not None else "–"
        test = "–"
        if r["test"] and r["test"]["tuned"] is not None:
            base = r["test"]["base"]
            test = f"{r['test']['metric']} {r['test']['tuned']:.4f}"
            test += f" (base {base:.4f})" if base is not None else ""
            of = r["test"].get("of_trials")
            if of and of < r["trials"]:
                test += f", exported from {of} of {r['trials']} trials"
        table.add_row(
            *(escape(str(r[k])) for k in ("name", "status", "model", "data")),
            trials,
            f"{r['steps_trained']}/{r['step_budget']}",
            best,
            test,
            age(r["updated"]),
        )
    return table
