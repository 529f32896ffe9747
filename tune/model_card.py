"""The exported model's card: Hugging Face model-card format (YAML metadata + Markdown)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tune.redact import redact_text

__all__ = ["write_model_card"]

# Where the built-in models come from, for the card's `base_model`.
_BASE_MODEL_IDS = {
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
_DATASETS = {
    "demo": [],
    "medquad": ["abachaa/MedQuAD"],
    "instruction": [],
}


_METRIC_NOTES = {
    "eval_loss": "answer tokens only, lower is better",
    "eval_perplexity": "answer tokens only, lower is better",
    "eval_accuracy": "the most likely of yes/no/maybe, higher is better",
}


def write_model_card(path: Path, metrics: dict, results: Path) -> None:
    cfg = yaml.safe_load((results / "medtune.yaml").read_text())
    data_file = results / "data.json"
    if not data_file.is_file():  # a sweep from before data.json wrote data/summary.json
        data_file = results / "data" / "summary.json"
    data = json.loads(data_file.read_text())
    sweep_file = results / "sweep_summary.json"
    sweep = json.loads(sweep_file.read_text()) if sweep_file.is_file() else {}
    space = yaml.safe_load((results / "search_space.yaml").read_text())
    model = cfg["model"]["name"]
    meta = {
        "base_model": _BASE_MODEL_IDS.get(model, model),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["medtune", "lora", "peft", "medical", "question-answering"],
        "datasets": _DATASETS.get(cfg["data"]["source"], []),
        "metrics": ["perplexity", "rouge"],
        "license": "other",
    }
    base, tuned = metrics["base"], metrics["tuned"]
    rows = "\n".join(f"| {k} | {base[k]:.4f} | {tuned[k]:.4f} |" for k in tuned if k in base)
    best = metrics["best_trial"]
    params = "\n".join(f"| {k} | {v:.4g} |" for k, v in best["config"].items())
    splits = "\n".join(
        f"| {name} | {s['records']} | {s['groups']} | {s['truncated']} |"
        for name, s in data["splits"].items()
    )
    samples = "\n\n".join(
        f"**Q:** {s['question']}\n\n- reference: {s['reference']}\n- base: {s['base']}\n"
        f"- tuned: {s['tuned']}"
        for s in metrics["samples"][:3]
    )
    trials = sweep.get("trials", [])
    confirmation = _confirmation_section(metrics.get("confirmation"))
    if metrics.get("chosen_by") == "--trial":
        confirmation = (
            f"Chosen by hand (`medtune export --trial {best['trial_id']}`): that trial's best "
            "checkpoint, which need not be the sweep's best.\n"
        )
    compute = sweep.get("trial_seconds")
    compute_text = f", {compute / 60:.1f} trial-minutes of compute" if compute else ""
    source_path = f" ({data['path']})" if data.get("path") else ""
    body = f"""# {metrics["run"]}: LoRA fine-tune of {meta["base_model"]}

Produced by [medtune](https://pypi.org/project/medtune/) from a hyperparameter sweep of LoRA
fine-tuning on medical question answering. The weights here are the base model with the
winning adapter merged in; `adapter/` holds the adapter alone
(`PeftModel.from_pretrained(base, "adapter")`).

**Not medical advice.** This model generates text that can be wrong, outdated or harmful if
followed. It is a research artifact for studying fine-tuning, not a clinical tool.

## Data
Source `{data["source"]}`{source_path}: {data["records_read"]} records read, dropped:
{data["dropped"] or "none"}. Split by group with seed {cfg["data"]["seed"]}, no group in two
splits. Fingerprint `{data["fingerprint"][:16]}`.

| split | records | groups | answers truncated |
|---|---|---|---|
{splits}

## Sweep
{len(trials)} trials: {sweep.get("stopped_early", "?")} stopped early, {sweep.get("errored", "?")}
errored, {sweep.get("steps_trained", "?")} training steps in all{compute_text}. Optuna TPE
(seed {cfg["search"]["seed"]}; {_startup_text(cfg["search"])}), scheduler
{_scheduler_text(cfg["scheduler"])}, metric `{metrics["metric"]}` on the validation split
({_METRIC_NOTES.get(metrics["metric"], "")}).

Search space: `{json.dumps(space)}`

Chosen (trial {best["trial_id"]}, checkpoint at step {best["step"]},
{metrics["metric"]} {best[metrics["metric"]]:.4f}):

| hyperparameter | value |
|---|---|
{params}

{confirmation}
## Test metrics
{metrics["test_examples"]} test examples for loss and perplexity (answer tokens only);
ROUGE F1 on greedy answers to the first {metrics["generated_examples"]}.

| metric | base model | tuned |
|---|---|---|
{rows}

{_decision_section(metrics)}
## Sample answers
{samples}

## Limitations
Small models and short sweeps learn the style of the training answers more than medical
knowledge. ROUGE rewards word overlap, not correctness. The test split comes from the same
source as training; performance on other populations, sources or languages is unknown.
"""
    card = "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + body
    path.write_text(redact_text(card))  # cards get shared: no token from the environment


# Jin et al., 2019 (PubMedQA) and Luo et al., 2022 (BioGPT): accuracy on the official
# 500-question test set.
PUBMEDQA_REFERENCES = {
    "majority class": 0.552,
    "BioBERT": 0.681,
    "single human": 0.780,
    "BioGPT": 0.782,
    "BioGPT-Large": 0.810,
}


def _decision_section(metrics: dict) -> str:
    if "accuracy" not in metrics["tuned"]:
        return ""
    rows = [
        f"| this model (tuned) | {metrics['tuned']['accuracy']:.3f} | "
        f"{metrics['tuned']['macro_f1']:.3f} |",
        f"| base model | {metrics['base']['accuracy']:.3f} | {metrics['base']['macro_f1']:.3f} |",
    ] + [f"| {name} (published) | {acc:.3f} | |" for name, acc in PUBMEDQA_REFERENCES.items()]
    return (
        "\n## PubMedQA decision (official test set)\nThe decision is read by comparing the "
        "likelihood of answering yes, no or maybe after the training prompt.\n\n"
        "| model | accuracy | macro-F1 |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _confirmation_section(confirmation: dict | None) -> str:
    if not confirmation:
        return "No confirmation runs (export.confirm_top_k=0): the sweep's best checkpoint.\n"
    rows = []
    for i, c in enumerate(confirmation["candidates"]):
        params = ", ".join(f"{k}={v:.3g}" for k, v in c["config"].items())
        runs = ", ".join(f"seed {r['seed']}: {r['best']:.4f}" for r in c["runs"]) or "failed"
        mean = f"{c['mean']:.4f} ± {c['std']:.4f}" if c["mean"] is not None else "n/a"
        mark = " **chosen**" if i == confirmation["chosen"] else ""
        rows.append(f"| {i + 1}{mark} | {params} | {c['sweep_best']:.4f} | {runs} | {mean} |")
    return (
        "## Confirmation\nThe top configurations retrained to the full budget with new seeds; "
        "the best mean validation score wins.\n\n"
        "| rank | hyperparameters | sweep best | confirmation runs | mean ± std |\n"
        "|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _startup_text(search: dict) -> str:
    """How the start-up trials were placed; sweeps saved before `search.startup` drew them at
    random."""
    n = search.get("startup_trials", 3)
    if search.get("startup", "random") == "stratified":
        return f"first {n} trials stratified on a Latin hypercube"
    return f"first {n} trials random"


def _scheduler_text(scheduler: dict) -> str:
    """The scheduler and how it promoted trials; sweeps saved before
    `scheduler.wait_to_compare` ran Ray's ASHA, which promotes the first trial at a rung."""
    if scheduler["name"] != "asha":
        return f"`{scheduler['name']}` (no early stopping)"
    rule = (
        "a trial first at a rung waits, paused at its checkpoint, until it can be compared"
        if scheduler.get("wait_to_compare", False)
        else "the first trial at a rung goes on unopposed, as in Ray's ASHA"
    )
    grace = scheduler["grace_period"]
    return (
        f"`asha` (grace period {grace} evaluation{'s' * (grace != 1)}, reduction factor "
        f"{scheduler['reduction_factor']:g}; {rule})"
    )
