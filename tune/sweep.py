"""`medtune sweep`: validate, prepare data and model once, run the Ray Tune sweep.

    medtune sweep --config tune/configs/default.yaml search.num_samples=8

Everything that can fail on bad input (config, search space, model name, data) is checked
before anything is written or Ray starts. The results folder then holds Tune's experiment
plus what medtune adds: the resolved config, the search space, the data splits with their
fingerprint, package versions, and `sweep_summary.json`. With a URI `run.storage` Ray writes
the experiment there and the results folder is the driver's copy (`tune/storage.py`).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import platform
import shutil
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import optuna
import yaml
from ray import tune as ray_tune
from ray.tune import ExperimentAnalysis
from ray.tune.schedulers import (
    ASHAScheduler,
    AsyncHyperBandScheduler,
    FIFOScheduler,
    TrialScheduler,
)
from ray.tune.search.optuna import OptunaSearch
from rich.console import Console
from rich.markup import escape

from search_spaces import SearchSpace, load_space
from trainables.data import (
    DataError,
    Record,
    read_jsonl,
    shared_between,
    split_records,
    write_jsonl,
)
from trainables.data import load_records as read_records
from trainables.evaluation import encode_decisions
from trainables.models import BaseWeights, base_weights, load_tokenizer, prepare_model
from trainables.precision import resolve_precision
from trainables.trainable import TrialSettings, train_lora
from tune.atomic_storage import remove_partial_files
from tune.cluster import start_ray
from tune.config import SweepConfig, check_more_trials, load_saved_config
from tune.controller import (
    copy_state_atomically,
    drop_stale_decisions_on_restore,
    kill_actors_that_never_started,
    snapshot_at_every_checkpoint,
)
from tune.data_report import data_summary, encode_splits
from tune.errors import UserError
from tune.interrupt import signals_stop_tune
from tune.progress import SweepProgress
from tune.redact import redact, redact_text
from tune.run_layout import check_new_run, results_dir
from tune.run_lock import sweep_lock
from tune.scheduler import ComparingASHA
from tune.storage import (
    MirrorResults,
    delete_run,
    download_results,
    is_uri,
    open_storage,
    run_uri,
    upload,
)
from tune.sweep_state import read_sweep, trial_error_line, tune_statuses

__all__ = [
    "PreparedSweep",
    "prepare_sweep",
    "results_dir",
    "restore_rungs",
    "resume_sweep",
    "run_sweep",
    "saved_training_data",
    "shared_weights",
    "shared_weights_format",
    "storage_location",
    "trial_settings",
]

log = logging.getLogger(__name__)

_PACKAGES = ("medtune", "torch", "transformers", "peft", "ray", "optuna", "accelerate")


@dataclass
class PreparedSweep:
    """A validated sweep, ready to run: nothing has been written yet."""

    cfg: SweepConfig
    space: SearchSpace
    model_path: str
    pad_token_id: int
    splits: dict[str, list[Record]]
    encoded: dict[str, list[dict]]
    data_summary: dict
    decisions: list[dict] = field(default_factory=list)  # data.task=decision: eval_accuracy


def storage_location(cfg: SweepConfig, results: Path) -> str:
    """Where Ray keeps the experiment: the storage URI's run folder, or the local folder."""
    return run_uri(cfg.run.storage, cfg.run.name) if is_uri(cfg.run.storage) else str(results)


def prepare_sweep(cfg: SweepConfig, console: Console, *, overwrite: bool = False) -> PreparedSweep:
    """Check every input and build the tokenized splits, writing nothing."""
    cfg = cfg.with_run_name()
    space = load_space(cfg.search.space)
    check_new_run(cfg, overwrite)
    records, report = read_records(cfg.data)
    splits = split_records(
        records,
        val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction,
        seed=cfg.data.seed,
    )
    _check_leakage(splits, cfg, console)
    with console.status(f"Preparing model {cfg.model.name} (converted once, then cached)"):
        model_path = prepare_model(cfg.model)
        tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    tokens = encode_splits(cfg, tokenizer, splits)
    for name, split in tokens.items():
        if not split.examples:
            raise DataError(
                f"data.max_length={cfg.data.max_length}: every {name} question is too long to "
                "leave room for an answer; raise data.max_length"
            )
    summary = data_summary(cfg, report, splits, tokens)
    encoded = {name: split.examples for name, split in tokens.items()}
    how = "read from the cache" if summary["tokens_from_cache"] else "encoded and cached"
    console.print(f"Tokens {how} in {escape(str(summary['tokens_cache_dir']))}")
    decisions = _decisions(cfg, tokenizer, splits["validation"])
    return PreparedSweep(
        cfg, space, model_path, tokenizer.pad_token_id, splits, encoded, summary, decisions
    )


def _check_leakage(splits: dict[str, list[Record]], cfg: SweepConfig, console: Console) -> None:
    """Refuse a test split sharing a group or an exact question with train (unless allowed).

    `split_records` never does this by itself; a split the source fixes can (PubMedQA's
    official test set next to a fold that reuses one of its questions, say).
    """
    groups, questions = shared_between(splits["test"], splits["train"])
    if not groups and not questions:
        return
    example = sorted(groups)[0] if groups else sorted(questions)[0]
    what = (
        f"the test split shares {len(groups)} group(s) and {len(questions)} normalized "
        f"question(s) with train (e.g. {example!r})"
    )
    if not cfg.data.allow_leakage:
        raise DataError(
            f"data: {what}, so test scores would overstate the model; fix the source's split "
            "or groups (medtune data inspect shows them), or pass data.allow_leakage=true"
        )
    console.print(
        f"[bold red]WARNING: data leakage[/]: {escape(what)}; test metrics will overstate the "
        "model (data.allow_leakage=true)"
    )


def run_sweep(prep: PreparedSweep, console: Console, *, overwrite: bool = False) -> dict:
    """Write the results folder, run the sweep on Ray, and return its summary; under the
    sweep's lock (`tune/run_lock.py`) from before `overwrite` deletes anything to the end."""
    with sweep_lock(results_dir(prep.cfg), "medtune sweep"):
        return _run_sweep(prep, console, overwrite=overwrite)


def _run_sweep(prep: PreparedSweep, console: Console, *, overwrite: bool) -> dict:
    cfg = prep.cfg
    out = results_dir(cfg)
    location = storage_location(cfg, out)
    # Ray first: a start that fails (no cluster at the address, a machine too busy) leaves
    # the folder, and what --overwrite would delete, as it was.
    start_ray(cfg, console)
    if overwrite and out.exists():
        shutil.rmtree(out)
    if overwrite and is_uri(location):
        delete_run(location)
    _write_inputs(prep, out)
    if is_uri(location):
        upload(out, location, _INPUT_FILES)
    snapshot_at_every_checkpoint()
    copy_state_atomically()
    kill_actors_that_never_started()
    tuner = _build_tuner(prep, out, console)
    console.print(
        f"Sweep [bold]{escape(cfg.run.name)}[/]: {cfg.search.num_samples} trials of "
        f"{escape(cfg.model.name)} on {escape(cfg.data.source)} "
        f"({len(prep.encoded['train'])} train / "
        f"{len(prep.encoded['validation'])} validation examples), "
        f"{cfg.scheduler.name} scheduler, results in {escape(str(out))}"
        + (f" (checkpoints in {escape(redact_text(location))})" if is_uri(location) else "")
    )
    console.print(f"Watch it: medtune dashboard {out}", markup=False)
    stopping = f"Stopping the sweep; its state is saved for `medtune sweep --resume {out}`"
    with signals_stop_tune(console, stopping) as stop:
        grid = tuner.fit()
    summary = _summarize(grid, cfg, _unfinished(grid) if stop.requested else None)
    _write_summary(summary, out, location)
    return summary


# -- helpers ---------------------------------------------------------------------------------


def _write_summary(summary: dict, out: Path, location: str) -> None:
    """`sweep_summary.json` in the results folder (and at the storage URI, with the last of
    Ray's files copied down first). The sweep has finished by now: a storage hiccup costs a
    warning, never the summary."""
    if is_uri(location):
        try:
            download_results(location, out, every_file=True)
        except (OSError, UserError) as err:
            log.warning("could not copy Ray's files from %s: %s", redact_text(location), err)
    (out / "sweep_summary.json").write_text(json.dumps(summary, indent=2))
    if is_uri(location):
        try:
            upload(out, location, ["sweep_summary.json"])
        except (OSError, UserError) as err:
            log.warning("sweep_summary.json not uploaded to %s: %s", redact_text(location), err)


# What medtune writes into a results folder before Tune starts.
_INPUT_FILES = ["medtune.yaml", "search_space.yaml", "data", "data.json", "environment.json"]


def _write_inputs(prep: PreparedSweep, out: Path) -> None:
    (out / "data").mkdir(parents=True)
    (out / "medtune.yaml").write_text(
        yaml.safe_dump(redact(prep.cfg.model_dump(mode="json")), sort_keys=False)
    )
    (out / "search_space.yaml").write_text(yaml.safe_dump(prep.space.describe(), sort_keys=False))
    for name, split in prep.splits.items():
        write_jsonl(split, out / "data" / f"{name}.jsonl")
    data = redact(prep.data_summary)
    (out / "data.json").write_text(json.dumps(data, indent=2, ensure_ascii=False))
    env = {p: _version(p) for p in _PACKAGES}
    env |= {"python": platform.python_version(), "machine": platform.machine()}
    (out / "environment.json").write_text(json.dumps(redact(env), indent=2))


def _version(package: str) -> str | None:
    try:
        return version(package)
    except Exception:
        return None


def trial_settings(cfg: SweepConfig, model_path: str, pad_token_id: int) -> TrialSettings:
    """What every trial of this sweep (and its confirmation runs) shares."""
    return TrialSettings(
        model_path=model_path,
        model=cfg.model,
        train=cfg.train,
        pad_token_id=pad_token_id,
        cpus=cfg.resources.cpus_per_trial,
    )


def _trainable(cfg: SweepConfig, settings: TrialSettings, data: dict):
    # with_parameters puts settings, data and the base weights in the object store once for
    # all trials; trials map the weights zero-copy instead of loading them from disk.
    weights = shared_weights(cfg, settings.model_path)
    return ray_tune.with_resources(
        ray_tune.with_parameters(train_lora, settings=settings, data=data, weights=weights),
        trial_resources(cfg),
    )


def shared_weights(cfg: SweepConfig, model_path: str) -> BaseWeights | None:
    """The frozen base as `BaseWeights` for the object store, loaded here once; None where
    trials load from `model_path` instead: 4-bit QLoRA (bitsandbytes quantizes while loading,
    on the GPU) and remote-code models (their classes may not exist on other nodes)."""
    if cfg.model.quantization != "none" or cfg.model.trust_remote_code:
        return None
    return base_weights(model_path, compute=shared_weights_format(cfg))


def shared_weights_format(cfg: SweepConfig) -> str:
    """The precision the shared base's linear weights are stored for: "bf16" where every trial
    computes in bf16 on CPU (`train.precision=bf16`, or `auto` on a sweep on this machine that
    picks bf16 here), "fp32" otherwise. Same numbers, less memory per trial
    (`trainables.models.store_linear_weights_in`); a trial on a node that picks another
    format loads the base from disk. GPU trials keep the fp32 base: not yet measured on one."""
    if cfg.resources.gpus_per_trial > 0:
        return "fp32"
    if cfg.train.precision == "bf16":
        return "bf16"
    if cfg.train.precision == "auto" and not cfg.ray.address:
        return resolve_precision("auto", cuda=False)
    return "fp32"


def trial_resources(cfg: SweepConfig) -> dict[str, float]:
    r = cfg.resources
    return {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial, **r.custom}


def saved_training_data(results: Path, cfg: SweepConfig) -> tuple[str, int, dict]:
    """Model path, pad id and tokenized train/validation from the splits a sweep wrote."""
    model_path = prepare_model(cfg.model)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    splits = {
        name: read_jsonl(results / "data" / f"{name}.jsonl") for name in ("train", "validation")
    }
    # The sweep cached these tokens: export, confirmation and resume read them back.
    data = {name: s.examples for name, s in encode_splits(cfg, tokenizer, splits).items()}
    data["validation"] = data["validation"][: cfg.train.eval_max_examples]
    if decisions := _decisions(cfg, tokenizer, splits["validation"]):
        data["decisions"] = decisions
    return model_path, tokenizer.pad_token_id, data


def _decisions(cfg: SweepConfig, tokenizer, validation: list[Record]) -> list[dict]:
    """data.task=decision: the yes/no/maybe options of the validation records a trial scores
    for eval_accuracy (capped like validation, by train.eval_max_examples)."""
    if cfg.data.task != "decision":
        return []
    return encode_decisions(
        tokenizer,
        validation[: cfg.train.eval_max_examples],
        max_length=cfg.data.max_length,
        system_prompt=cfg.data.system_prompt,
    )


def resume_sweep(
    results: Path, console: Console, *, num_samples: int | None = None
) -> tuple[SweepConfig, dict]:
    """Finish an interrupted sweep: unfinished and errored trials go on from their checkpoints,
    finished ones are not run again, and the searcher continues from its saved state.

    `num_samples` above the saved `search.num_samples` extends the sweep (finished or not)
    with more trials, sampled by the restored Optuna study. Under the sweep's lock."""
    with sweep_lock(results, "medtune sweep --resume"):
        return _resume_sweep(results, console, num_samples)


def _resume_sweep(
    results: Path, console: Console, num_samples: int | None
) -> tuple[SweepConfig, dict]:
    results = results.resolve()
    cfg = load_saved_config(results)
    location = storage_location(cfg, results)
    if not ray_tune.Tuner.can_restore(location):
        raise UserError(
            f"--resume {results}: no Ray Tune experiment state in {redact_text(location)} (the "
            "sweep never started); start it again with `medtune sweep --overwrite run.name=...`"
        )
    if num_samples is not None and num_samples != cfg.search.num_samples:
        cfg = _extend(results, location, cfg, num_samples)
        console.print(f"Extending sweep [bold]{escape(cfg.run.name)}[/] to {num_samples} trials")
    if not is_uri(cfg.run.storage):  # what a driver killed mid-copy left (the old files stand)
        remove_partial_files(results)
    model_path, pad_id, data = saved_training_data(results, cfg)
    start_ray(cfg, console)
    snapshot_at_every_checkpoint()
    copy_state_atomically()
    kill_actors_that_never_started()
    drop_stale_decisions_on_restore()
    trainable = _trainable(cfg, trial_settings(cfg, model_path, pad_id), data)
    tuner = ray_tune.Tuner.restore(
        location, trainable=trainable, resume_unfinished=True, resume_errored=True
    )
    # What Tune does not restore: the progress lines' numbering and ASHA's rungs.
    local = getattr(tuner, "_local_tuner", None)  # None when driving Ray through ray://
    if local is not None:
        _renumber_progress(local, results, cfg)
        reported = {t.trial_id: t.history for t in read_sweep(results).trials}
        paused = {i for i, (status, _) in tune_statuses(results).items() if status == "PAUSED"}
        restore_rungs(local._tune_config.scheduler, reported, cfg, paused=paused)
    # The summary of the run that stopped (or of the sweep being extended) is rewritten at the
    # end; until then the dashboard shows the sweep running again, and export waits for it.
    (results / "sweep_summary.json").unlink(missing_ok=True)
    console.print(
        f"Resuming sweep [bold]{escape(cfg.run.name)}[/] from {escape(redact_text(location))}"
    )
    console.print(f"Watch it: medtune dashboard {results}", markup=False)
    stopping = f"Stopping the sweep; its state is saved for `medtune sweep --resume {results}`"
    with signals_stop_tune(console, stopping) as stop:
        grid = tuner.fit()
    summary = _summarize(grid, cfg, _unfinished(grid) if stop.requested else None)
    _write_summary(summary, results, location)
    return cfg, summary


def _renumber_progress(local, results: Path, cfg: SweepConfig) -> None:
    """The progress lines come from the callback pickled when the sweep started: the trials
    already there keep their numbers (in the order Tune created them: a restored one prints
    as "trial 2/8 resumes from step 150"), new ones count on ("trial 5/8")."""
    created = list(tune_statuses(results))
    for callback in local.get_run_config().callbacks or []:
        if isinstance(callback, SweepProgress):
            callback.num_samples = cfg.search.num_samples
            callback.numbers = {trial_id: n for n, trial_id in enumerate(created, 1)}
            callback.started = max(
                callback.started, len(created), len(list(results.glob("trial_*")))
            )


def restore_rungs(
    scheduler, reported: dict[str, list], cfg: SweepConfig, paused: set[str] = frozenset()
) -> None:
    """Refill a restored sweep's ASHA rungs with what each trial reported at them, and have
    ComparingASHA wait again with the trials that were waiting to be compared.

    Tune saves no scheduler state: on `--resume` ASHA starts with empty rungs, so a restored
    trial's next result was recorded, and decided, at the highest rung it had already passed,
    with that later step's value, and new trials were compared against nothing; and a trial
    paused at a rung, waiting for rivals, went on undecided. `reported`: each trial's
    evaluations (`SweepState` history: step and metric value); `paused`: the trials the saved
    state holds PAUSED."""
    if not isinstance(scheduler, AsyncHyperBandScheduler):
        return  # FIFO: nothing to restore
    op = -1.0 if cfg.search.mode == "min" else 1.0  # Ray records metric_op * value
    for bracket in scheduler._brackets:  # one, as medtune builds it
        for milestone, recorded in bracket._rungs:
            step = int(milestone) * cfg.train.eval_every  # one evaluation per iteration
            for trial_id, history in reported.items():
                at = [e.value for e in history if e.step == step]
                if at:
                    recorded[trial_id] = op * at[-1]
    if not isinstance(scheduler, ComparingASHA):
        return  # Ray's ASHA never pauses a trial
    for milestone, _ in scheduler._brackets[0]._rungs:  # once every rung holds its results
        step = int(milestone) * cfg.train.eval_every
        for trial_id in paused:
            if reported.get(trial_id) and reported[trial_id][-1].step == step:
                scheduler.wait_again(trial_id, milestone)  # paused at this rung's result


def _extend(results: Path, location: str, cfg: SweepConfig, num_samples: int) -> SweepConfig:
    """Raise the trial budget in the saved config and in Tune's saved search state.

    `Tuner.restore` keeps the TuneConfig it pickled, and the search generator restores its
    trial budget from `search_gen_state-*.json` (Ray 2.60, pinned), so that is where the new
    budget goes; the Optuna study inside is untouched and goes on sampling from all trials.
    `location` is the local results folder or the storage URI's run folder.
    """
    import pyarrow.fs as pafs
    from ray import cloudpickle

    check_more_trials(results, cfg, num_samples)
    fs, base = open_storage(location) if is_uri(location) else (pafs.LocalFileSystem(), location)
    pattern = "search_gen_state-*.json"
    states = [
        info.path
        for info in fs.get_file_info(pafs.FileSelector(base))
        if fnmatch.fnmatch(Path(info.path).name, pattern)
    ]
    if not states:
        raise UserError(
            f"--resume {results}: no searcher state ({pattern}) to extend; resume without "
            "search.num_samples"
        )
    newest = max(states, key=lambda path: Path(path).name)  # named by a sortable timestamp
    # Pickled, despite the name (ray.tune.utils.util._atomic_save).
    with fs.open_input_stream(newest) as f:
        state = cloudpickle.loads(f.read())
    state["total_samples"], state["finished"] = num_samples, False
    tmp = f"{Path(newest).parent.as_posix()}/tmp-{Path(newest).name}"
    with fs.open_output_stream(tmp) as f:
        f.write(cloudpickle.dumps(state))
    fs.move(tmp, newest)  # a rename on a local disk: a kill leaves the old or the new state
    cfg = cfg.model_copy(
        update={"search": cfg.search.model_copy(update={"num_samples": num_samples})}
    )
    (results / "medtune.yaml").write_text(
        yaml.safe_dump(redact(cfg.model_dump(mode="json")), sort_keys=False)
    )
    if is_uri(location):
        upload(results, location, ["medtune.yaml"])
    return cfg


def startup_points(cfg: SweepConfig, space: SearchSpace) -> list[dict] | None:
    """The start-up trials' hyperparameters when `search.startup=stratified`, else None (TPE
    draws them at random). They reach Optuna as enqueued trials, so TPE counts them among its
    `n_startup_trials` and a restored study does not run them twice."""
    if cfg.search.startup != "stratified":
        return None
    n = min(cfg.search.startup_trials, cfg.search.num_samples)
    return space.stratified(n, seed=cfg.search.seed)


def _build_tuner(prep: PreparedSweep, out: Path, console: Console) -> ray_tune.Tuner:
    cfg = prep.cfg
    metric, mode = cfg.search.metric, cfg.search.mode
    settings = trial_settings(cfg, prep.model_path, prep.pad_token_id)
    limit = cfg.train.eval_max_examples
    data = {"train": prep.encoded["train"], "validation": prep.encoded["validation"][:limit]}
    if prep.decisions:
        data["decisions"] = prep.decisions
    trainable = _trainable(cfg, settings, data)
    searcher = OptunaSearch(
        space=prep.space.to_optuna(),
        metric=metric,
        mode=mode,
        points_to_evaluate=startup_points(cfg, prep.space),
        sampler=optuna.samplers.TPESampler(
            seed=cfg.search.seed, n_startup_trials=cfg.search.startup_trials
        ),
    )
    scheduler = _scheduler(cfg)
    return ray_tune.Tuner(
        trainable,
        tune_config=ray_tune.TuneConfig(
            metric=metric,
            mode=mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=cfg.search.num_samples,
            max_concurrent_trials=cfg.resources.max_concurrent_trials,
            reuse_actors=cfg.run.reuse_actors,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
        ),
        run_config=ray_tune.RunConfig(
            name=cfg.run.name,
            storage_path=cfg.run.storage if is_uri(cfg.run.storage) else str(out.parent),
            checkpoint_config=ray_tune.CheckpointConfig(
                num_to_keep=cfg.run.checkpoints_to_keep,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            failure_config=ray_tune.FailureConfig(max_failures=cfg.run.max_failures),
            callbacks=[
                SweepProgress(
                    console, metric, cfg.train.max_steps, cfg.search.num_samples, mode=mode
                ),
                *_mlflow_callback(cfg),
                *_mirror_callback(cfg, out),
            ],
            verbose=0,
        ),
    )


def _scheduler(cfg: SweepConfig) -> TrialScheduler:
    if cfg.scheduler.name == "fifo":
        return FIFOScheduler()
    asha = {
        "time_attr": "training_iteration",  # one iteration = one evaluation
        "max_t": cfg.evaluations,
        "grace_period": cfg.scheduler.grace_period,
        "reduction_factor": cfg.scheduler.reduction_factor,
    }
    if not cfg.scheduler.wait_to_compare:
        return ASHAScheduler(**asha)
    return ComparingASHA(
        num_samples=cfg.search.num_samples,
        max_concurrent=cfg.resources.max_concurrent_trials,
        **asha,
    )


def _mirror_callback(cfg: SweepConfig, out: Path) -> list:
    """With a URI run.storage: keep the local results folder current for the dashboard."""
    location = storage_location(cfg, out)
    return [MirrorResults(location, out)] if is_uri(location) else []


def _mlflow_callback(cfg: SweepConfig) -> list:
    """Ray Tune's own MLflow logger when `run.mlflow_uri` is set: one MLflow run per trial."""
    if not cfg.run.mlflow_uri:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return [
        MLflowLoggerCallback(
            tracking_uri=cfg.run.mlflow_uri, experiment_name=cfg.run.name, save_artifact=False
        )
    ]


def _unfinished(grid: ray_tune.ResultGrid) -> set[str]:
    """Trials a stopped sweep had not ended, as the experiment state `--resume` reads has them.

    Not the grid's own trials: once a stopped run has saved that state, Tune marks the trials
    it stops TERMINATED in memory, as if they had finished."""
    saved = ExperimentAnalysis(grid.experiment_path, storage_filesystem=grid.filesystem)
    return {t.trial_id for t in saved.trials if t.status not in ("TERMINATED", "ERROR")}


def _summarize(
    grid: ray_tune.ResultGrid, cfg: SweepConfig, unfinished: set[str] | None = None
) -> dict:
    """The sweep's outcome. A trial is `completed` (trained to its budget or stopped by the
    scheduler), `error`, or `unfinished`: the sweep was stopped (Ctrl-C; `unfinished` then
    holds the trials it had not ended) and `medtune sweep --resume` goes on with it."""
    metric, mode = cfg.search.metric, cfg.search.mode
    stopped, unfinished = unfinished is not None, unfinished or set()
    trials = []
    for result in grid:
        df = result.metrics_dataframe
        has = df is not None and metric in df
        # A trial that failed before its first report has no metrics, only its folder.
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix(
            "trial_"
        )
        trials.append(
            {
                "trial_id": trial_id,
                "config": result.config,
                "status": "error"
                if result.error
                else ("unfinished" if trial_id in unfinished else "completed"),
                "error": _error_reason(result.error),
                "evaluations": int(len(df)) if has else 0,
                "last_step": int(df["step"].iloc[-1]) if has else 0,
                f"best_{metric}": float(getattr(df[metric], mode)()) if has else None,
                "seconds": float(result.metrics.get("time_total_s", 0.0))
                if result.metrics
                else 0.0,
                "node_id": result.metrics.get("node_id") if result.metrics else None,
                "node_ip": result.metrics.get("node_ip") if result.metrics else None,
                "path": result.path,
            }
        )
    ok = [t for t in trials if t[f"best_{metric}"] is not None]
    pick = min if mode == "min" else max
    best = pick(ok, key=lambda t: t[f"best_{metric}"]) if ok else None
    # Stopped before every trial had ended, or before the searcher had proposed them all.
    left = sum(t["status"] == "unfinished" for t in trials)
    left += max(0, cfg.search.num_samples - len(trials)) if stopped else 0
    summary = {
        "name": cfg.run.name,
        "metric": metric,
        "mode": mode,
        "trials": trials,
        "interrupted": left > 0,
        "unfinished": left,
        "errored": sum(t["status"] == "error" for t in trials),
        "stopped_early": sum(
            t["status"] == "completed" and t["last_step"] < cfg.train.max_steps for t in trials
        ),
        "steps_trained": sum(t["last_step"] for t in trials),
        "trial_seconds": sum(t["seconds"] for t in trials),
        "best": best,
    }
    return redact(summary)  # trial errors can quote a token from the environment


def _error_reason(error: Exception | None) -> str | None:
    """A trial's error as one line (the exception's last line), with a fix where one is known."""
    if error is None:
        return None
    return redact_text(trial_error_line(str(error)) if str(error).strip() else type(error).__name__)
