"""The whole path through the real `medtune` command: tiny-random, demo slice, ASHA, export."""

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from search_spaces import load_space
from tests.conftest import read_progress
from tests.tune.conftest import MAX_STEPS, SAMPLES

pytestmark = pytest.mark.slow


def test_results_folder_holds_inputs_and_tune_experiment(sweep):
    out, _ = sweep
    cfg = yaml.safe_load((out / "medtune.yaml").read_text())
    assert cfg["model"]["name"] == "tiny-random"
    assert cfg["run"]["name"] == "e2e"
    assert (out / "search_space.yaml").is_file()
    summary = json.loads((out / "data.json").read_text())
    assert len(summary["fingerprint"]) == 64 and summary["records_read"] > 0
    groups = {}
    for split in ("train", "validation", "test"):
        rows = [json.loads(x) for x in (out / "data" / f"{split}.jsonl").read_text().splitlines()]
        assert len(rows) == summary["splits"][split]["records"] > 0
        groups[split] = {r["group"] for r in rows}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["validation"]
    env = json.loads((out / "environment.json").read_text())
    assert env["ray"] and env["torch"] and env["peft"]
    assert list(out.glob("experiment_state-*.json"))


def test_asha_sweep_invariants(sweep):
    out, stdout = sweep
    summary = json.loads((out / "sweep_summary.json").read_text())
    trials = summary["trials"]
    assert len(trials) == SAMPLES
    assert summary["errored"] == 0
    assert all(t["evaluations"] >= 1 for t in trials)
    assert any(t["last_step"] == MAX_STEPS for t in trials)
    assert summary["steps_trained"] <= SAMPLES * MAX_STEPS
    assert summary["stopped_early"] == sum(t["last_step"] < MAX_STEPS for t in trials)
    for t in trials:
        assert set(t["config"]) == {"learning_rate", "weight_decay", "lora_r"}
        assert 1e-5 <= t["config"]["learning_rate"] <= 1e-3
        assert t["config"]["lora_r"] in (4, 8, 16, 32)
    assert "Sweep done" in stdout and "Exported to" in stdout
    # The closing line shows what early stopping saved: the summary's steps of the budget.
    steps = f"{summary['steps_trained']} of {SAMPLES * MAX_STEPS} steps trained"
    assert f"{summary['stopped_early']} stopped early, 0 errored; {steps}, " in stdout
    assert "Ray dashboard: http://127.0.0.1:" in stdout


def test_each_event_is_one_line_in_a_piped_log(sweep):
    # The fixture pipes stdout, as a CI log or `| tee` does: without a terminal rich wrapped
    # at 80 columns, and these lines came out in two or three pieces.
    out, stdout = sweep
    lines = stdout.splitlines()
    trial = r"trial [0-9a-f_]+"
    metrics = json.loads((out / "export" / "metrics.json").read_text())
    scored = f"on {metrics['test_examples']} test examples and {metrics['generated_examples']}"
    patterns = [
        rf"Sweep e2e: {SAMPLES} trials of tiny-random on demo \(\d+ train / \d+ validation "
        rf"examples\), asha scheduler, results in {re.escape(str(out))}",
        rf"Watch it: medtune dashboard {re.escape(str(out))}",
        rf"Sweep done: {SAMPLES} trials, \d+ stopped early, 0 errored; "
        rf"\d+ of {SAMPLES * MAX_STEPS} steps trained, (\d+ min )?\d+ s\. "
        rf"Best eval_loss \d+\.\d{{4}} \({trial}\)\.",
        rf"Chosen: {trial} at step \d+ \(eval_loss \d+\.\d{{4}}\), checkpoint "
        rf"{re.escape(str(out))}/confirm/confirm_\w+/checkpoint_\d+",  # confirmation's winner
        # Scored here, or kept from an earlier export of this model on this test split in
        # this worker's cache (tune/base_scores.py).
        rf"(Scored the base model {scored} answers in (\d+ min )?\d+ s|The base model's test "
        r"scores: kept from an export at .*)",
        rf"Scored the tuned model {scored} answers in (\d+ min )?\d+ s",
        rf"Exported to {re.escape(str(out))}/export \(merged model, adapter/, metrics\.json, "
        r"README\.md\)",
    ]
    for pattern in patterns:
        assert any(re.fullmatch(pattern, line) for line in lines), (pattern, stdout[-3000:])
    assert any(re.fullmatch(rf"✓ trial \d/{SAMPLES} (finished|stopped early).*", x) for x in lines)
    # The scoring's progress bars draw only in a terminal: in a log, not even a blank line.
    chosen = next(i for i, line in enumerate(lines) if line.startswith("Chosen: "))
    assert re.fullmatch(patterns[4], lines[chosen + 1]), lines[chosen : chosen + 3]
    assert re.fullmatch(patterns[5], lines[chosen + 2]), lines[chosen : chosen + 3]


def test_start_up_trials_are_the_stratified_points(sweep):
    # search.startup=stratified (the default): the 3 start-up trials run exactly the Latin
    # hypercube points, one per third of each range; the 4th comes from TPE (its own random
    # draw until 3 trials have finished).
    out, _ = sweep
    cfg = yaml.safe_load((out / "medtune.yaml").read_text())
    assert cfg["search"]["startup"] == "stratified" and cfg["search"]["startup_trials"] == 3
    configs = [t["config"] for t in json.loads((out / "sweep_summary.json").read_text())["trials"]]
    points = load_space("lora_default").stratified(3, seed=cfg["search"]["seed"])
    assert all(p in configs for p in points), (points, configs)


def test_every_evaluation_reports_the_documented_metrics(sweep):
    out, _ = sweep
    for progress in out.glob("trial_*/progress.csv"):
        df = read_progress(progress)
        for key in ("eval_loss", "eval_perplexity", "train_loss", "step", "tokens_per_second"):
            assert key in df
        assert (df["step"] % 5 == 0).all() and df["step"].is_monotonic_increasing
        assert df["eval_loss"].map(math.isfinite).all()
        assert (
            (df["eval_perplexity"] - df["eval_loss"].map(math.exp)).abs()
            < 1e-6 * df["eval_perplexity"]
        ).all()
        assert (df["tokens_per_second"] > 0).all()


def _evaluations(folder: Path, pattern: str) -> pd.DataFrame:
    frames = (read_progress(p) for p in folder.glob(f"{pattern}/progress.csv"))
    return pd.concat(frames, ignore_index=True)


def test_best_checkpoint_is_the_best_evaluation_not_the_last(sweep):
    from tune.export import best_checkpoint

    out, _ = sweep
    every = _evaluations(out, "trial_*")
    best_row = every.loc[every["eval_loss"].idxmin()]
    checkpoint, metrics = best_checkpoint(out, "eval_loss")
    assert metrics["eval_loss"] == pytest.approx(best_row["eval_loss"])
    assert (metrics["trial_id"], metrics["step"]) == (best_row["trial_id"], best_row["step"])
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == metrics["step"]


def test_confirmation_retrains_the_top_2_with_2_new_seeds(sweep):
    out, stdout = sweep
    summary = json.loads((out / "confirm_summary.json").read_text())
    sweep_best = _evaluations(out, "trial_*").groupby("trial_id")["eval_loss"].min()
    candidates = summary["candidates"]
    assert len(candidates) == 2
    assert [c["sweep_best"] for c in candidates] == pytest.approx(sorted(sweep_best)[:2])
    for c in candidates:
        assert sorted(r["seed"] for r in c["runs"]) == [1, 2]
        assert c["mean"] == pytest.approx(sum(r["best"] for r in c["runs"]) / 2)
    confirm_runs = _evaluations(out / "confirm", "confirm_*")
    assert confirm_runs.groupby("trial_id")["step"].max().eq(MAX_STEPS).all()  # full budget
    chosen = candidates[summary["chosen"]]
    assert chosen["mean"] == min(c["mean"] for c in candidates)
    metrics = json.loads((out / "export" / "metrics.json").read_text())
    best = metrics["best_trial"]
    assert best["eval_loss"] == min(r["best"] for r in chosen["runs"])
    assert best["config"] == {**chosen["config"], "seed": summary["best_run"]["seed"]}
    assert "Confirming the top 2 configurations" in stdout


def test_export_metrics_are_finite_and_in_range(sweep):
    out, _ = sweep
    metrics = json.loads((out / "export" / "metrics.json").read_text())
    for side in ("base", "tuned"):
        m = metrics[side]
        assert set(m) == {"test_loss", "test_perplexity", "rouge1", "rouge2", "rougeL"}
        assert math.isfinite(m["test_loss"]) and m["test_loss"] > 0
        assert m["test_perplexity"] == pytest.approx(math.exp(m["test_loss"]))
        for k in ("rouge1", "rouge2", "rougeL"):
            assert 0.0 <= m[k] <= 1.0
    assert metrics["test_examples"] > 0
    assert len(metrics["samples"]) == metrics["generated_examples"] == 6
    assert metrics["base"]["test_loss"] != metrics["tuned"]["test_loss"]


def test_export_folder_loads_in_a_pipeline_and_as_an_adapter(sweep, tiny_model_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, pipeline

    out, _ = sweep
    export = out / "export"
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        "metrics.json",
        "README.md",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    ):
        assert (export / name).is_file(), name
    generator = pipeline("text-generation", model=str(export))
    text = generator("Question: What is asthma?\nAnswer:", max_new_tokens=5, do_sample=False)
    assert isinstance(text[0]["generated_text"], str)

    # This worker's copy of the base: the shared sweep may have run in the other worker.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    adapted = PeftModel.from_pretrained(base, str(export / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(export)).eval()
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        assert torch.allclose(adapted(ids).logits, merged(ids).logits, atol=1e-5)


def test_model_card(sweep):
    out, _ = sweep
    card = (out / "export" / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "transformers" and "lora" in meta["tags"]
    assert "Not medical advice" in card
    assert "| test_loss |" in card
    assert "## Confirmation" in card and "**chosen**" in card
    assert "trial-minutes of compute" in card
    assert "first 3 trials stratified on a Latin hypercube" in card
    assert (
        "scheduler `asha` (grace period 1 evaluation, reduction factor 2; a trial first at a "
        "rung waits, paused at its checkpoint, until it can be compared)"
    ) in " ".join(card.split())


@pytest.mark.usefixtures("ray_2_cpus")
def test_a_confirmation_is_reused_only_while_it_ran_the_sweeps_top_configurations(sweep, tmp_path):
    """A second export reuses the confirmation runs; once the sweep's top k are other
    configurations (it was extended after its export and a new trial is among the best),
    they run again instead of choosing among configurations that are no longer the best."""
    import io
    import shutil

    from rich.console import Console

    from tune.config import load_saved_config
    from tune.confirm import run_confirmation, top_configs

    out, _ = sweep
    copy = tmp_path / "e2e"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("export"))
    cfg = load_saved_config(copy)
    cached = json.loads((copy / "confirm_summary.json").read_text())
    shown = io.StringIO()
    assert run_confirmation(copy, cfg, Console(file=shown)) == cached
    assert shown.getvalue() == ""  # nothing ran

    # The summary of a confirmation of the sweep's second-best configuration alone, with
    # seed 1: what an export had written before the best trial existed.
    cfg.export.confirm_top_k, cfg.export.confirm_seeds = 1, 1
    top, second = top_configs(copy, "eval_loss", 2)
    stale = {**cached, "candidates": [cached["candidates"][1]], "chosen": 0, "seeds": [1]}
    assert stale["candidates"][0]["config"] == second["config"]
    (copy / "confirm_summary.json").write_text(json.dumps(stale))
    summary = run_confirmation(copy, cfg, Console(file=shown))
    assert "top configurations changed since its confirmation runs" in shown.getvalue()
    assert "Confirming the top 1 configurations with seeds [1]" in shown.getvalue()
    assert [c["config"] for c in summary["candidates"]] == [top["config"]]
    assert summary["seeds"] == [1] and [r["seed"] for r in summary["candidates"][0]["runs"]] == [1]
    assert json.loads((copy / "confirm_summary.json").read_text()) == summary
    assert json.loads((out / "confirm_summary.json").read_text()) == cached  # the shared sweep's
