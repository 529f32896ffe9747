"""Read a results folder, finished or still running, into one plain `SweepState`.

The dashboard and the static report both draw from this; it only reads files that Ray Tune
and medtune write (never Ray's live state), so it works on a copy of the folder, on another
machine, and while the sweep is still writing:

- `medtune.yaml` and `search_space.yaml`: the sweep's config and space;
- `experiment_state-*.json`: each trial's status as the Tune driver last saved it;
- `trial_*/params.json`, `progress.csv`, `error.txt`: each trial's settings, every reported
  evaluation, and the error of a failed trial;
- `sweep_summary.json`, `confirm_summary.json`, `export/metrics.json` once they exist.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from tune.config import SweepConfig, load_saved_config
from tune.errors import UserError
from tune.run_lock import holder

__all__ = [
    "Evaluation",
    "SweepState",
    "TrialState",
    "asha_rungs",
    "read_sweep",
    "state_version",
    "trial_error_line",
    "tune_statuses",
]

# Ray's trial statuses, as the dashboard names them.
_STATUS = {
    "RUNNING": "running",
    "PENDING": "pending",
    "PAUSED": "waiting",  # held by ASHA at a rung until it can be compared
    "TERMINATED": "completed",
    "ERROR": "errored",
}

# As the page lists them: live first, then ended, then the ones a resume would go on with.
_ORDER = ("running", "waiting", "pending", "completed", "stopped", "unfinished", "errored")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the task's name in a trial's error


def trial_error_line(text: str) -> str:
    """A trial's error as one line: the last line of its traceback (the exception and its
    message; medtune's own errors end with their reason), with the fix where one is known."""
    lines = [line.strip() for line in _ANSI.sub("", text).strip().splitlines() if line.strip()]
    reason = lines[-1] if lines else "no error text"
    if "OutOfMemoryError" in reason or "out of memory" in reason.lower():
        reason += (
            "; lower train.per_device_batch_size or data.max_length (raise "
            "train.gradient_accumulation_steps to keep the batch), or give trials more memory"
        )
    return reason


@dataclass
class Evaluation:
    step: int
    value: float  # the sweep's metric
    train_loss: float | None
    tokens_per_second: float | None
    seconds: float  # the trial's time_total_s at this evaluation


@dataclass
class TrialState:
    trial_id: str
    status: str  # running | waiting | pending | completed | stopped | errored
    params: dict
    history: list[Evaluation] = field(default_factory=list)
    stopped_at_rung: int | None = None  # 1-based ASHA rung where the scheduler stopped it
    error: str | None = None
    node_id: str | None = None
    seconds: float = 0.0

    @property
    def evaluations(self) -> int:
        return len(self.history)

    @property
    def last_step(self) -> int:
        return self.history[-1].step if self.history else 0

    @property
    def last_value(self) -> float | None:
        return self.history[-1].value if self.history else None

    @property
    def error_line(self) -> str | None:
        """Its error as one line (`trial_error_line`); `error` keeps the whole text."""
        return trial_error_line(self.error) if self.error else None

    def best(self, mode: str) -> Evaluation | None:
        finite = [e for e in self.history if math.isfinite(e.value)]
        if not finite:
            return None
        pick = min if mode == "min" else max
        return pick(finite, key=lambda e: e.value)


@dataclass
class SweepState:
    name: str
    folder: str
    metric: str
    mode: str
    model: str
    data_source: str
    scheduler: str
    max_steps: int
    eval_every: int
    num_samples: int
    rung_steps: list[int]  # steps at which ASHA may stop a trial
    space: dict  # the search space as saved (search_space.yaml)
    trials: list[TrialState]
    finished: bool  # sweep_summary.json written: the driver is done
    interrupted: bool  # ... before every trial had ended (Ctrl-C): it can be resumed
    driver_gone: bool  # not finished, and no medtune process works on it: killed, resumable
    updated: float  # newest modification time among the files read
    export: dict | None = None  # export/metrics.json
    confirmation: dict | None = None  # confirm_summary.json

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(_ORDER, 0)
        for t in self.trials:
            out[t.status] += 1
        return out

    @property
    def status(self) -> str:
        """finished | interrupted | stopped: driver gone | in progress"""
        if self.finished:
            return "interrupted" if self.interrupted else "finished"
        return "stopped: driver gone" if self.driver_gone else "in progress"

    @property
    def steps_trained(self) -> int:
        """Training steps the trials have run so far (a resumed trial's counted once)."""
        return sum(t.last_step for t in self.trials)

    def best_trial(self) -> TrialState | None:
        scored = [t for t in self.trials if t.best(self.mode) is not None]
        if not scored:
            return None
        pick = min if self.mode == "min" else max
        return pick(scored, key=lambda t: t.best(self.mode).value)

    def to_json(self) -> dict:
        """Everything the page shows, as plain data (the dashboard's /api/state)."""
        data = asdict(self)
        best = self.best_trial()
        data["counts"] = self.counts
        data["steps_trained"] = self.steps_trained
        data["best_trial_id"] = best.trial_id if best else None
        return data


def asha_rungs(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """ASHA's milestones below `max_t`, in training iterations (evaluations).

    The same rule as Ray's `ASHAScheduler` with one bracket: grace_period * rf**k.
    """
    rungs, t = [], grace_period
    while t < max_t:
        rungs.append(int(t))
        t *= reduction_factor
    return rungs


def read_sweep(folder: Path) -> SweepState:
    """The sweep in `folder` as it stands on disk now."""
    folder = Path(folder).resolve()
    if not (folder / "medtune.yaml").is_file():
        raise UserError(
            f"{folder}: not a medtune results folder (no medtune.yaml); pass the folder a sweep "
            "writes, e.g. results/<run.name>"
        )
    cfg = load_saved_config(folder)
    mode = cfg.search.mode
    evaluations = cfg.evaluations
    rungs = (
        asha_rungs(evaluations, cfg.scheduler.grace_period, cfg.scheduler.reduction_factor)
        if cfg.scheduler.name == "asha"
        else []
    )
    statuses = tune_statuses(folder)
    trials = []
    for trial_dir in sorted(folder.glob("trial_*")):
        trial = _read_trial(trial_dir, cfg, statuses)
        if trial.status == "completed" and trial.last_step < cfg.train.max_steps:
            trial.status = "stopped"
            if trial.evaluations in rungs:
                trial.stopped_at_rung = rungs.index(trial.evaluations) + 1
        trials.append(trial)
    # Trials Tune knows about whose folder is not written yet (pending ones).
    seen = {t.trial_id for t in trials}
    for trial_id, (status, params) in statuses.items():
        if trial_id not in seen:
            trials.append(TrialState(trial_id, _STATUS.get(status, "pending"), params))
    summary = folder / "sweep_summary.json"
    outcome = _read_json(summary)
    # No summary and no medtune process holding the sweep's lock: the driver was killed (or
    # its machine restarted) before it could write one.
    gone = outcome is None and holder(folder) is None
    if outcome is not None or gone:
        # The driver is done or gone: a trial Tune had not ended is unfinished, not running
        # or due (`medtune sweep --resume` goes on with it).
        for trial in trials:
            if trial.status in ("running", "waiting", "pending"):
                trial.status = "unfinished"
    return SweepState(
        name=cfg.run.name,
        folder=str(folder),
        metric=cfg.search.metric,
        mode=mode,
        model=cfg.model.name,
        data_source=cfg.data.source,
        scheduler=cfg.scheduler.name,
        max_steps=cfg.train.max_steps,
        eval_every=cfg.train.eval_every,
        num_samples=cfg.search.num_samples,
        rung_steps=[r * cfg.train.eval_every for r in rungs],
        space=_read_yaml(folder / "search_space.yaml") or {},
        trials=trials,
        finished=outcome is not None,
        interrupted=bool(outcome and outcome.get("interrupted")),
        driver_gone=gone,
        updated=state_version(folder),
        export=_read_json(folder / "export" / "metrics.json"),
        confirmation=_read_json(folder / "confirm_summary.json"),
    )


def state_version(folder: Path) -> float:
    """The newest modification time among the files the page is drawn from.

    Cheap enough to poll every few seconds: the dashboard redraws only when it changes.
    """
    folder = Path(folder)
    paths = [
        *folder.glob("experiment_state-*.json"),
        *folder.glob("trial_*/progress.csv"),
        *folder.glob("trial_*/error.txt"),
        folder / "sweep_summary.json",
        folder / "confirm_summary.json",
        folder / "export" / "metrics.json",
    ]
    newest = 0.0
    for p in paths:
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:
            continue
    return newest


# -- helpers ---------------------------------------------------------------------------------


def tune_statuses(folder: Path) -> dict[str, tuple[str, dict]]:
    """{trial_id: (Ray status, config)} from the newest experiment state, if readable, in the
    order Tune created the trials."""
    # The newest by name, as Tune picks it: names carry the run's start time, while copies
    # (a resume's download, medtune's copy to storage) set modification times of their own.
    states = sorted(folder.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        raw = json.loads(states[-1].read_text())
        out = {}
        for trial_json, _runtime in raw["trial_data"]:
            trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
            out[str(trial["trial_id"])] = (trial.get("status", "PENDING"), trial.get("config", {}))
        return out
    except (OSError, ValueError, KeyError, TypeError):
        # Tune rewrites the file while we read it now and then; the next poll gets it.
        return {}


def _read_trial(trial_dir: Path, cfg: SweepConfig, statuses: dict) -> TrialState:
    trial_id = trial_dir.name.removeprefix("trial_")
    status, params = statuses.get(trial_id, (None, {}))
    params = _read_json(trial_dir / "params.json") or params
    history, node, seconds = _read_progress(trial_dir / "progress.csv", cfg.search.metric)
    error_file = trial_dir / "error.txt"
    error = error_file.read_text(errors="replace").strip() if error_file.is_file() else None
    error = _ANSI.sub("", error) if error else error
    if status is None:
        # No experiment state yet (or unreadable): infer from the files.
        finished = history and history[-1].step >= cfg.train.max_steps
        status = "ERROR" if error else ("TERMINATED" if finished else "RUNNING")
    if status != "ERROR":
        error = None  # a retried trial keeps the error file of the attempt that failed
    return TrialState(
        trial_id=trial_id,
        status=_STATUS.get(status, "pending"),
        params=params,
        history=history,
        error=error,
        node_id=node,
        seconds=seconds,
    )


def _read_progress(path: Path, metric: str) -> tuple[list[Evaluation], str | None, float]:
    """Every evaluation a trial reported, one per step (a resumed trial may repeat steps: the
    later report wins), its last node and its time."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return [], None, 0.0
    by_step: dict[int, Evaluation] = {}
    node, seconds = None, 0.0
    for row in rows:
        try:
            step = int(float(row["step"]))
            value = float(row[metric])
        except (KeyError, TypeError, ValueError):
            continue  # a row being written, or a metric this trial never reported
        seconds = _float(row.get("time_total_s")) or seconds
        node = row.get("node_id") or node
        by_step[step] = Evaluation(
            step=step,
            value=value,
            train_loss=_float(row.get("train_loss")),
            tokens_per_second=_float(row.get("tokens_per_second")),
            seconds=seconds,
        )
    return [by_step[s] for s in sorted(by_step)], node, seconds


def _float(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def age(updated: float) -> str:
    """'12 s ago', for the page header."""
    seconds = max(0, time.time() - updated)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
