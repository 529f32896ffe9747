"""Confirm before test: retrain the sweep's top-k configurations with fresh seeds.

A sweep's winner is the luckiest of many noisy runs. Before anything touches the test split,
the k best configurations are trained again to the full step budget with `confirm_seeds` new
seeds each, on the same Ray cluster, and the configuration with the best *mean* validation
score wins. Its best checkpoint is what gets exported and tested, once.

Results live in `results/<name>/confirm/` (a Tune experiment) and `confirm_summary.json`;
a second `medtune export` reuses them while the sweep's top k are the configurations they ran
(a sweep extended after its export may have a new best: its confirmation runs again). With a
URI `run.storage` the experiment is at `<run.storage>/<name>/confirm/`, written by whichever
nodes ran it, and the driver fetches the one checkpoint it chooses (as for the sweep's own
trials, `tune/storage.py`).
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from ray import tune as ray_tune
from ray.tune import ExperimentAnalysis, ResultGrid
from rich.console import Console

from trainables.trainable import train_lora
from tune.cluster import start_ray
from tune.config import SweepConfig
from tune.controller import kill_actors_that_never_started
from tune.errors import UserError
from tune.interrupt import Interrupted, signals_stop_tune
from tune.progress import SweepProgress
from tune.redact import redact_text
from tune.storage import delete_run, is_uri, open_storage, run_uri, upload
from tune.sweep import (
    saved_training_data,
    shared_weights,
    storage_location,
    trial_resources,
    trial_settings,
)

__all__ = ["run_confirmation", "top_configs"]

SUMMARY = "confirm_summary.json"


def top_configs(results: Path | str, metric: str, k: int, mode: str = "min") -> list[dict]:
    """The k distinct configurations with the best evaluation anywhere in their trial;
    `results` is the sweep's folder or its folder under a storage URI."""
    grid = ResultGrid(ExperimentAnalysis(str(results), default_metric=metric, default_mode=mode))
    scored = []
    for result in grid:
        df = result.metrics_dataframe
        if df is not None and metric in df and df[metric].notna().any():
            scored.append((float(getattr(df[metric], mode)()), result.config))
    scored.sort(key=lambda s: s[0], reverse=mode == "max")
    seen, out = set(), []
    for score, config in scored:
        key = json.dumps(config, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append({"config": config, "sweep_best": score})
    if not out:
        raise UserError(f"{results}: no trial reported {metric}; nothing to confirm")
    return out[:k]


def run_confirmation(results: Path, cfg: SweepConfig, console: Console) -> dict:
    """Retrain the top-k with new seeds; return the summary with the chosen checkpoint."""
    metric, mode = cfg.search.metric, cfg.search.mode
    location = storage_location(cfg, results)  # the results folder, or the run under a URI
    candidates = top_configs(location, metric, cfg.export.confirm_top_k, mode)
    seeds = [cfg.train.seed + i for i in range(1, cfg.export.confirm_seeds + 1)]
    cached = results / SUMMARY
    if cached.is_file():
        summary = json.loads(cached.read_text())
        if _confirms(summary, candidates, seeds):
            return summary
        # A sweep extended or resumed after its export may have a new top k: these runs
        # confirmed configurations that are no longer the ones to choose from.
        console.print(
            "The sweep's top configurations changed since its confirmation runs: running them again"
        )
    console.print(
        f"Confirming the top {len(candidates)} configurations with seeds {seeds} "
        f"({len(candidates) * len(seeds)} runs of {cfg.train.max_steps} steps)"
    )
    model_path, pad_id, data = saved_training_data(results, cfg)
    start_ray(cfg)
    kill_actors_that_never_started()  # as the sweep's own Tune run (tune/controller.py)
    trainable = ray_tune.with_resources(
        ray_tune.with_parameters(
            _confirm_trial,
            candidates=[c["config"] for c in candidates],
            settings=trial_settings(cfg, model_path, pad_id),
            data=data,
            weights=shared_weights(cfg, model_path),
        ),
        trial_resources(cfg),
    )
    runs = len(candidates) * len(seeds)
    # Runs of an export that was stopped (Ctrl-C) are no use: theirs is not the full budget.
    shutil.rmtree(results / "confirm", ignore_errors=True)
    if is_uri(location):
        delete_run(run_uri(location, "confirm"))
    tuner = ray_tune.Tuner(
        trainable,
        param_space={
            "candidate": ray_tune.grid_search(list(range(len(candidates)))),
            "seed": ray_tune.grid_search(seeds),
        },
        tune_config=ray_tune.TuneConfig(
            metric=metric,
            mode=mode,
            max_concurrent_trials=cfg.resources.max_concurrent_trials,
            reuse_actors=cfg.run.reuse_actors,
            trial_dirname_creator=lambda t: f"confirm_{t.trial_id}",
        ),
        run_config=ray_tune.RunConfig(
            name="confirm",
            storage_path=location,
            checkpoint_config=ray_tune.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=metric, checkpoint_score_order=mode
            ),
            failure_config=ray_tune.FailureConfig(max_failures=cfg.run.max_failures),
            callbacks=[SweepProgress(console, metric, cfg.train.max_steps, runs, mode=mode)],
            verbose=0,
        ),
    )
    with signals_stop_tune(console, "Stopping the confirmation runs; nothing is exported") as stop:
        grid = tuner.fit()
    if stop.requested:  # a mean over the runs that happened to end would pick blindly
        raise Interrupted(
            f"Export stopped during the confirmation runs; nothing exported. `medtune export "
            f"{results}` runs them again."
        )
    summary = {**_summarize(grid, candidates, metric, location, mode), "seeds": seeds}
    cached.write_text(json.dumps(summary, indent=2))
    if is_uri(location):  # the URI holds the whole sweep, as the sweep's own summary
        upload(results, location, [SUMMARY])
    return summary


def _confirms(summary: dict, candidates: list[dict], seeds: list[int]) -> bool:
    """Whether `summary` (a confirmation's) ran these candidates' configurations with these
    seeds. Summaries written before it recorded its seeds give them by their runs."""

    def key(config: dict) -> str:
        return json.dumps(config, sort_keys=True)

    ran = summary.get("seeds") or sorted(
        {r["seed"] for c in summary["candidates"] for r in c["runs"]}
    )
    return ran == seeds and [key(c["config"]) for c in summary["candidates"]] == [
        key(c["config"]) for c in candidates
    ]


def _confirm_trial(config: dict, *, candidates: list[dict], settings, data, weights) -> None:
    """A confirmation run: candidate `config["candidate"]`'s hyperparameters, a new seed."""
    train_lora(
        {**candidates[config["candidate"]], "seed": config["seed"]},
        settings=settings,
        data=data,
        weights=weights,
    )


def _summarize(
    grid: ResultGrid, candidates: list[dict], metric: str, location: str, mode: str = "min"
) -> dict:
    """Each candidate's runs, mean and spread, and the chosen one; checkpoints are given
    relative to the run's folder at `location` (local, or under a storage URI)."""
    pick = min if mode == "min" else max
    base = open_storage(location)[1] if is_uri(location) else location
    for c in candidates:
        c["runs"] = []
    for result in grid:
        if result.error or not result.best_checkpoints:
            continue
        checkpoint, m = pick(result.best_checkpoints, key=lambda cm: cm[1][metric])
        candidates[result.config["candidate"]]["runs"].append(
            {
                "seed": result.config["seed"],
                "best": m[metric],
                "step": m["step"],
                "trial_id": m["trial_id"],
                "checkpoint": Path(checkpoint.path).relative_to(base).as_posix(),
            }
        )
    for c in candidates:
        scores = [r["best"] for r in c["runs"]]
        c["mean"] = statistics.fmean(scores) if scores else None
        c["std"] = statistics.stdev(scores) if len(scores) > 1 else 0.0
    ranked = [i for i, c in enumerate(candidates) if c["mean"] is not None]
    if not ranked:
        raise UserError(
            f"every confirmation run failed; see {redact_text(location)}/confirm (each run's "
            "error.txt)"
        )
    chosen = pick(ranked, key=lambda i: candidates[i]["mean"])
    best_run = pick(candidates[chosen]["runs"], key=lambda r: r["best"])
    return {
        "metric": metric,
        "mode": mode,
        "candidates": candidates,
        "chosen": chosen,
        "best_run": best_run,
    }
