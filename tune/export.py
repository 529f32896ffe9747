"""`medtune export results/<name>`: the best checkpoint, scored on the test split, exported.

With `export.confirm_top_k > 0` the top configurations are first retrained with new seeds
(`tune/confirm.py`) and the one with the best mean validation score wins. Otherwise the
winner is the trial with the best evaluation anywhere in its history, and the checkpoint is
the one written at that evaluation, not the trial's last. Only the chosen model touches the
test split, once. The export folder is the merged model (loads with
`transformers.pipeline`), plus `adapter/` (PEFT), `metrics.json`, `medtune_prompt.json`, a
model card and `checksums.sha256`. It is written to a temporary folder and renamed into
place, so a failed export leaves any earlier export untouched. With a URI `run.storage` an
export inside the results folder (the default place) is also uploaded to the same place under
the URI, replacing one there, `checksums.sha256` last: a head node's disk need not outlive it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from peft import PeftModel
from ray.tune import ExperimentAnalysis, ResultGrid
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from trainables.data import read_jsonl
from trainables.evaluation import (
    answer_loss,
    decision_scores,
    generate_completions,
    perplexity,
    rouge,
)
from trainables.models import (
    cache_root,
    load_model,
    load_tokenizer,
    prepare_model,
    silence_peft_deprecation,
)
from tune.base_scores import base_scores_key, read_base_scores, write_base_scores
from tune.config import SweepConfig, load_saved_config
from tune.confirm import run_confirmation
from tune.console import duration
from tune.data_report import encode_splits
from tune.errors import UserError
from tune.export_layout import PROMPT_FILE, check_sweep_finished, check_trial
from tune.model_card import write_model_card
from tune.redact import redact_text
from tune.storage import delete_run, download_folder, is_uri, open_storage, run_uri, upload

__all__ = ["MANIFEST", "PROMPT_FILE", "best_checkpoint", "export_best"]

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MANIFEST = "checksums.sha256"


def best_checkpoint(
    results: Path,
    metric: str,
    mode: str = "min",
    storage: str | None = None,
    trial_id: str | None = None,
) -> tuple[Path, dict]:
    """The checkpoint of the best evaluation across every trial (or of `trial_id` alone) and
    its metrics.

    `mode` is "min" for losses, "max" for eval_accuracy (`SearchConfig.mode`). `storage`: the
    run's folder under a storage URI, where Ray keeps the checkpoints; the chosen one is
    downloaded into the same place under `results`.
    """
    analysis = ExperimentAnalysis(storage or str(results), default_metric=metric, default_mode=mode)
    candidates = [
        (ckpt, m)
        for result in ResultGrid(analysis)
        for ckpt, m in (result.best_checkpoints or [])
        if m.get(metric) == m.get(metric)  # NaN never wins
        and trial_id in (None, m.get("trial_id"))
    ]
    if not candidates and trial_id is not None:
        raise UserError(
            f"--trial {trial_id}: that trial kept no checkpoint with a finite {metric} (it "
            "failed or stopped before its first evaluation); choose another"
        )
    if not candidates:
        raise UserError(
            f"{results}: no trial reported a checkpoint; the sweep failed or has not reached "
            "its first evaluation (see sweep_summary.json and the trial error files)"
        )
    pick = min if mode == "min" else max
    checkpoint, metrics = pick(candidates, key=lambda c: c[1][metric])
    if storage is None:
        return Path(checkpoint.path), metrics
    rel = Path(checkpoint.path).relative_to(open_storage(storage)[1]).as_posix()
    return download_folder(storage, rel, results), metrics


def export_best(
    results: Path, console: Console, *, out: Path | None = None, trial: str | None = None
) -> dict:
    """Score base and best model on the test split; write the export. Returns metrics.

    `trial`: export that trial's best checkpoint instead of the sweep's best, without
    confirmation runs; the sweep need not have finished (an interrupted one's trials keep
    their checkpoints).
    """
    results = results.resolve()
    cfg = load_saved_config(results)
    out = (out or results / "export").resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"export destination {out} is a file; remove it or choose another")
    if trial is None:
        check_sweep_finished(results)
    else:
        check_trial(results, trial)
    storage = run_uri(cfg.run.storage, cfg.run.name) if is_uri(cfg.run.storage) else None
    confirmation = None
    if trial is not None:
        checkpoint, best = best_checkpoint(
            results, cfg.search.metric, cfg.search.mode, storage=storage, trial_id=trial
        )
        chosen_by = "--trial"
    elif cfg.export.confirm_top_k > 0:
        chosen_by = "confirmation"
        confirmation = run_confirmation(results, cfg, console)
        run = confirmation["best_run"]
        chosen = confirmation["candidates"][confirmation["chosen"]]
        # With a URI run.storage the confirmation runs' checkpoints are there; this one is
        # fetched (once: a later export finds it in the results folder).
        checkpoint = (
            download_folder(storage, run["checkpoint"], results)
            if storage
            else results / run["checkpoint"]
        )
        best = {
            "trial_id": run["trial_id"],
            "step": run["step"],
            "config": {**chosen["config"], "seed": run["seed"]},
            cfg.search.metric: run["best"],
        }
    else:
        checkpoint, best = best_checkpoint(
            results, cfg.search.metric, cfg.search.mode, storage=storage
        )
        chosen_by = "best evaluation"
    console.print(
        f"Chosen: trial {best['trial_id']} at step {best['step']} "
        f"({cfg.search.metric} {best[cfg.search.metric]:.4f}), checkpoint {checkpoint}"
    )
    test = read_jsonl(results / "data" / "test.jsonl")
    model_path = prepare_model(cfg.model)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    model = load_model(model_path, trust_remote_code=cfg.model.trust_remote_code)

    # From the token cache the sweep filled (same test split, tokenizer and settings).
    split = encode_splits(cfg, tokenizer, {"test": test})["test"]
    examples = split.examples
    samples = test[: cfg.export.generate_samples]
    base = _base_score(model_path, split, model, tokenizer, samples, test, cfg, console)
    with silence_peft_deprecation():
        model = PeftModel.from_pretrained(model, str(checkpoint))
    tuned = _score(model, tokenizer, examples, samples, test, cfg, console, "the tuned model")
    metrics = {
        "run": cfg.run.name,
        "model": cfg.model.name,
        "metric": cfg.search.metric,
        "best_trial": {
            "trial_id": best["trial_id"],
            "step": best["step"],
            "config": best["config"],
            cfg.search.metric: best[cfg.search.metric],
            "checkpoint": str(checkpoint.relative_to(results)),
        },
        "test_examples": len(examples),
        "generated_examples": len(samples),
        "base": base.pop("metrics"),
        "tuned": tuned.pop("metrics"),
        "samples": [
            {"question": r.question, "reference": r.answer, "base": b, "tuned": t}
            for r, b, t in zip(samples, base["answers"], tuned["answers"], strict=True)
        ],
        "confirmation": confirmation,
        # How the checkpoint was chosen: the sweep's best evaluation, confirmation runs, or
        # by hand (`medtune export --trial`).
        "chosen_by": chosen_by,
        # The sweep's trial budget when exported: the dashboard tells an export made before
        # the sweep was extended (`--resume search.num_samples=N`).
        "sweep_trials": cfg.search.num_samples,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    prompt = {"system_prompt": cfg.data.system_prompt, "max_length": cfg.data.max_length}
    _write_export(model, tokenizer, checkpoint, metrics, prompt, results, out)
    if storage and out.is_relative_to(results):
        remote = run_uri(storage, out.relative_to(results).as_posix())
        with console.status("Uploading the export"):
            _upload_export(out, remote)
        console.print(f"Uploaded the export to {redact_text(remote)}")
    return metrics


def _upload_export(out: Path, uri: str) -> None:
    """The export at `uri` too, replacing one there; its manifest goes last, so an upload cut
    short has no checksums.sha256 and cannot pass for a whole export."""
    delete_run(uri)
    upload(out, uri, [p.name for p in sorted(out.iterdir()) if p.name != MANIFEST] + [MANIFEST])


def _write_manifest(folder: Path) -> None:
    """sha256 of every file, in `sha256sum -c` format."""
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        lines.append(f"{digest.hexdigest()}  {path.relative_to(folder).as_posix()}")
    (folder / MANIFEST).write_text("\n".join(lines) + "\n")


def _score(
    model, tokenizer, examples, samples, test, cfg: SweepConfig, console: Console, who: str
) -> dict:
    """`who`'s test metrics and sample answers, with a progress bar for each part (on a
    large test split this takes minutes on a CPU) and a line saying what was scored."""
    started = time.monotonic()
    size = cfg.export.batch_size
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    # Without a terminal (a log) the bars would leave only blank lines.
    bars = Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
    with bars as progress:
        # Counted in padded tokens, in the order answer_loss takes them (shortest first), so
        # the time left is not read off the short examples that come first.
        lengths = sorted(len(e["input_ids"]) for e in examples)
        work = [
            lengths[i : i + size][-1] * len(lengths[i : i + size])
            for i in range(0, len(lengths), size)
        ]
        task = progress.add_task(f"Scoring {who} on {len(examples)} test examples", total=sum(work))
        loss = answer_loss(
            model, examples, size, tokenizer.pad_token_id, on_batch=_ticks(progress, task, work)
        )
        task = progress.add_task(f"Answering test questions with {who}", total=len(samples))

        def answered(start: int, partials: list) -> None:
            done = (p.final(cfg.export.max_new_tokens) for p in partials)
            progress.update(task, completed=start + sum(done))

        completions = generate_completions(
            model,
            tokenizer,
            samples,
            max_new_tokens=cfg.export.max_new_tokens,
            batch_size=size,
            system_prompt=cfg.data.system_prompt,
            on_step=answered,
        )
        answers = [c.text for c in completions]
        scores = rouge(answers, [r.answer for r in samples]) if samples else {}
        if cfg.data.source == "pubmedqa" and cfg.data.task == "decision":
            task = progress.add_task(f"Reading {who}'s yes/no/maybe decisions", total=len(test))
            scores |= decision_scores(
                model,
                tokenizer,
                test,
                max_length=cfg.data.max_length,
                system_prompt=cfg.data.system_prompt,
                on_batch=_ticks(progress, task, [1] * len(test)),
            )
    console.print(
        f"Scored {who} on {len(examples)} test examples and {len(samples)} answers in "
        f"{duration(time.monotonic() - started)}"
    )
    return {
        "metrics": {"test_loss": loss, "test_perplexity": perplexity(loss), **scores},
        "answers": answers,
    }


def _base_score(
    model_path: str, split, model, tokenizer, samples, test, cfg: SweepConfig, console: Console
) -> dict:
    """`_score` of the base model, or the same scores kept from an earlier export
    (`tune/base_scores.py`)."""
    settings = {
        "batch_size": cfg.export.batch_size,
        "max_new_tokens": cfg.export.max_new_tokens,
        "decisions": cfg.data.source == "pubmedqa" and cfg.data.task == "decision",
    }
    key = base_scores_key(model_path, Path(split.cache_file).stem, samples, settings)
    folder = cache_root(cfg.model) / "base_scores"
    if kept := read_base_scores(folder, key):
        console.print(
            f"The base model's test scores: kept from an export at {kept['scored_at']} (the "
            "same model, test split and settings)"
        )
        return {"metrics": kept["metrics"], "answers": kept["answers"]}
    scores = _score(model, tokenizer, split.examples, samples, test, cfg, console, "the base model")
    write_base_scores(folder, key, scores)
    return scores


def _ticks(progress: Progress, task, work: list[int]):
    """An `on_batch` (called as each batch begins) that moves `task` on by the work of the
    batch before (`work`: each batch's, in order)."""
    begun = 0

    def tick() -> None:
        nonlocal begun
        if begun:
            progress.advance(task, work[begun - 1])
        begun += 1

    return tick


def _write_export(
    model, tokenizer, checkpoint: Path, metrics: dict, prompt: dict, results: Path, out: Path
) -> None:
    """Write everything into a temporary sibling folder, then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        adapter = tmp / "adapter"
        adapter.mkdir()
        for name in _ADAPTER_FILES:
            shutil.copy2(checkpoint / name, adapter / name)
        merged = model.merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        # How the model was prompted in training; `medtune generate` and `serve` ask the same way.
        (tmp / PROMPT_FILE).write_text(json.dumps(prompt, indent=2))
        write_model_card(tmp / "README.md", metrics, results)
        _write_manifest(tmp)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}-old-{int(time.time())}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
