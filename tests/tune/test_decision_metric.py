"""search.metric=eval_accuracy on PubMedQA decisions: trials report it, and every place that
compares trials maximizes it; anything but data.task=decision is refused before Ray starts.
Also the sweep's data.json and the token cache that export and resume read back."""

from __future__ import annotations

import json
from io import StringIO

import pandas as pd
import pytest
from peft import PeftModel
from rich.console import Console

from tests.conftest import read_progress
from tests.trainables.test_sources import write_pubmedqa
from trainables.data import read_jsonl
from trainables.evaluation import decision_scores
from trainables.models import load_model, load_tokenizer
from tune.cli import main
from tune.config import ConfigError, load_config
from tune.confirm import top_configs
from tune.export import best_checkpoint
from tune.model_card import write_model_card
from tune.sweep import prepare_sweep, run_sweep, saved_training_data


def test_eval_accuracy_needs_the_decision_task(capsys):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["search.metric=eval_accuracy"])
    assert str(info.value) == (
        "search.metric: got 'eval_accuracy', but data.task=long_answer (data.source=demo); "
        "validation accuracy is scored for yes/no/maybe answers only: pass data.task=decision "
        "(data.source=pubmedqa) or search.metric=eval_loss"
    )
    assert main(["sweep", "model.name=tiny-random", "search.metric=eval_accuracy"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medtune: error: search.metric: got 'eval_")
    assert load_config(None, []).search.mode == "min"


@pytest.fixture(scope="module")
def accuracy_sweep(tmp_path_factory, model_cache, ray_2_cpus):
    root = tmp_path_factory.mktemp("accuracy")
    path = write_pubmedqa(root / "pubmedqa")
    overrides = [
        "model.name=tiny-random",
        "data.source=pubmedqa",
        f"data.path={path}",
        "data.task=decision",
        "data.fold=0",
        "data.max_length=96",
        "search.metric=eval_accuracy",
        "search.num_samples=2",
        "search.startup_trials=1",
        "scheduler.name=asha",
        "train.max_steps=4",
        "train.eval_every=2",
        "train.per_device_batch_size=2",
        f"run.storage={root / 'results'}",
        "run.name=acc",
        "run.checkpoints_to_keep=2",
    ]
    cfg = load_config(None, overrides)
    log = StringIO()
    prep = prepare_sweep(cfg, Console(file=log, width=200))
    summary = run_sweep(prep, Console(file=log, width=200))
    return cfg, prep, summary, root / "results" / "acc", log.getvalue()


def test_trials_report_accuracy_and_the_best_is_the_highest(accuracy_sweep):
    cfg, prep, summary, out, _ = accuracy_sweep
    assert cfg.search.mode == "max" and summary["mode"] == "max"
    assert summary["errored"] == 0 and len(summary["trials"]) == 2
    frames = [read_progress(p) for p in out.glob("trial_*/progress.csv")]
    assert len(frames) == 2
    for df in frames:
        assert df["eval_accuracy"].between(0, 1).all() and df["eval_macro_f1"].between(0, 1).all()
        assert df["eval_loss"].notna().all()  # the loss is still reported
    best_per_trial = sorted(df["eval_accuracy"].max() for df in frames)
    assert sorted(t["best_eval_accuracy"] for t in summary["trials"]) == best_per_trial
    assert summary["best"]["best_eval_accuracy"] == best_per_trial[-1]
    # Confirmation ranks the same way: best first.
    ranked = top_configs(out, "eval_accuracy", 2, "max")
    assert [c["sweep_best"] for c in ranked] == best_per_trial[::-1]


def test_export_picks_the_most_accurate_checkpoint_scored_as_export_scores(accuracy_sweep):
    cfg, prep, _, out, _ = accuracy_sweep
    checkpoint, metrics = best_checkpoint(out, "eval_accuracy", "max")
    reported = pd.concat(read_progress(p) for p in out.glob("trial_*/progress.csv"))
    assert metrics["eval_accuracy"] == reported["eval_accuracy"].max()
    # The trial's eval_accuracy is export's decision accuracy on the validation split.
    tokenizer = load_tokenizer(prep.model_path)
    model = PeftModel.from_pretrained(load_model(prep.model_path), str(checkpoint))
    validation = read_jsonl(out / "data" / "validation.jsonl")
    scores = decision_scores(model, tokenizer, validation, max_length=cfg.data.max_length)
    assert scores["accuracy"] == pytest.approx(metrics["eval_accuracy"], abs=1e-9)
    assert scores["macro_f1"] == pytest.approx(metrics["eval_macro_f1"], abs=1e-9)


def test_data_json_is_the_inspect_report_and_export_reads_cached_tokens(accuracy_sweep):
    cfg, prep, _, out, log = accuracy_sweep
    assert not (out / "data" / "summary.json").exists()
    data = json.loads((out / "data.json").read_text())
    assert data == prep.data_summary
    assert (data["source"], data["task"], data["max_length"]) == ("pubmedqa", "decision", 96)
    assert {n: s["records"] for n, s in data["splits"].items()} == {
        "train": 6,
        "validation": 2,
        "test": 4,
    }
    for name, split in data["splits"].items():
        assert split["records"] == len(read_jsonl(out / "data" / f"{name}.jsonl"))
        assert split["examples"] == split["records"] - split["too_long"]
        assert split["tokens"]["p50"] <= split["tokens"]["max"]
    assert len(data["fingerprint"]) == 64 and data["overlap"]["test/train"]["shared_groups"] == 0
    assert "Tokens encoded and cached in" in log or "Tokens read from the cache in" in log
    # Export, confirmation and resume tokenize through saved_training_data: from the cache.
    _, _, again = saved_training_data(out, cfg)
    assert again["train"] == prep.encoded["train"]
    assert again["validation"] == prep.encoded["validation"]
    assert [d["label"] for d in again["decisions"]] == [d["label"] for d in prep.decisions]
    second = prepare_sweep(cfg, Console(file=StringIO()), overwrite=True)
    assert second.data_summary["tokens_from_cache"] is True
    assert all(s["tokens_from_cache"] for s in second.data_summary["splits"].values())
    assert second.encoded == prep.encoded


def test_model_card_reads_data_json_and_the_summary_of_older_sweeps(accuracy_sweep, tmp_path):
    _, prep, summary, out, _ = accuracy_sweep
    _, best = best_checkpoint(out, "eval_accuracy", "max")
    scores = {"test_loss": 1.0, "accuracy": 0.5, "macro_f1": 0.4}
    metrics = {
        "run": "acc",
        "metric": "eval_accuracy",
        "best_trial": {k: best[k] for k in ("trial_id", "step", "config", "eval_accuracy")},
        "base": scores,
        "tuned": scores,
        "samples": [],
        "test_examples": 4,
        "generated_examples": 0,
    }
    old = tmp_path / "old"  # the layout sweeps wrote before data.json: data/summary.json
    (old / "data").mkdir(parents=True)
    for name in ("medtune.yaml", "search_space.yaml", "sweep_summary.json"):
        (old / name).write_bytes((out / name).read_bytes())
    (old / "data" / "summary.json").write_bytes((out / "data.json").read_bytes())
    for results in (out, old):
        card = tmp_path / f"{results.name}.md"
        write_model_card(card, metrics, results)
        text = card.read_text()
        rows = [
            f"| {n} | {s['records']} | {s['groups']} |"
            for n, s in prep.data_summary["splits"].items()
        ]
        assert all(row in text for row in rows), text
        assert f"Fingerprint `{prep.data_summary['fingerprint'][:16]}`" in text
        assert "(the most likely of yes/no/maybe, higher is better)" in text
