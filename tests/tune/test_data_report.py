"""`medtune data inspect` through the real command, and its near-duplicate search."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import shared_data
from tests.trainables.test_sources import write_pubmedqa
from tune.data_report import near_duplicates

MEDTUNE = str(Path(sys.executable).parent / "medtune")


def inspect(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # Options first: argparse takes the key=value list in one run.
    options = [a for a in args if a.startswith("-") or a.endswith(".yaml")]
    cmd = [MEDTUNE, "data", "inspect", *options, "model.name=tiny-random"]
    cmd += [a for a in args if a not in options]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def leaky_pubmedqa(tmp_path, model_cache) -> Path:
    """PubMedQA in its upstream files; fold 1 trains on a test question, verbatim and reworded."""
    path = write_pubmedqa(tmp_path / "pubmedqa", leak=True)
    config = tmp_path / "inspect.yaml"
    config.write_text(
        "model: {name: tiny-random}\n"
        f"data: {{source: pubmedqa, path: {path}, fold: 1, task: decision, max_length: 64}}\n"
    )
    return config


def test_demo_report_as_text(tmp_path, model_cache):
    proc = inspect(cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Data: demo; tokens of tiny-random, data.max_length 256" in out
    assert (
        "Records: 250 read, 250 kept; dropped 0 empty, 0 duplicate, 0 filtered, 0 too long" in out
    )
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert [int(rows[name][0]) for name in ("train", "validation", "test")] == [197, 27, 26]
    p50, p95, longest = (int(v) for v in rows["train"][2:5])
    assert 0 < p50 <= p95 <= longest < 256
    assert rows["test/train"] == ["0", "0", "0"]


def test_pubmedqa_report_as_json_shows_the_leak(tmp_path, leaky_pubmedqa):
    proc = inspect("--config", str(leaky_pubmedqa), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["source"], report["task"], report["max_length"]) == ("pubmedqa", "decision", 64)
    assert report["records_read"] == 12
    dropped = report["dropped"]
    assert set(dropped) == {"empty", "duplicate", "filtered", "too_long"}
    assert report["records_kept"] == 12 - dropped["too_long"]
    splits = report["splits"]
    assert {n: s["records"] for n, s in splits.items()} == {"train": 6, "validation": 2, "test": 4}
    assert splits["test"]["labels"] == {"maybe": 1, "no": 1, "yes": 2}
    assert sum(s["context_cut"] for s in splits.values()) > 0  # abstracts do not fit in 64
    for s in splits.values():
        assert s["groups"] == s["records"]
        assert 64 < s["tokens"]["p50"] <= s["tokens"]["p95"] <= s["tokens"]["max"]
    leak = report["overlap"]["test/train"]
    assert (leak["shared_groups"], leak["same_question"], leak["near_duplicates"]) == (0, 1, 1)
    assert leak["examples"][0]["other"].endswith("surgery today?")
    assert 0.8 <= leak["examples"][0]["jaccard"] < 1
    assert report["overlap"]["test/validation"]["same_question"] == 0


def test_pubmedqa_report_as_text(leaky_pubmedqa):
    # In this process (the command's own entry point), to spare a second start of torch.
    from argparse import Namespace
    from io import StringIO

    from rich.console import Console

    from tune.data_report import run_inspect

    args = Namespace(config=str(leaky_pubmedqa), json=False, overrides=["data.task=long_answer"])
    buffer = StringIO()
    assert run_inspect(args, Console(file=buffer, width=80, highlight=False)) == 0
    out = buffer.getvalue()
    assert "task long_answer" in out and "Records: 12 read" in out
    assert "test/train" in out and "(token 3-gram Jaccard >= 0.8)" in out
    assert (
        "  test 'Does early mobilisation shorten hospital stay after hip fracture surgery?' ~ "
        "train 'Does early mobilisation shorten hospital stay after hip fracture surgery today?' "
        "(0.89)" in out
    )


def test_bad_data_is_one_line_exit_2(tmp_path, model_cache):
    table = tmp_path / "qa.csv"
    table.write_text("question,reply\nWhat is gout?,A form of arthritis.\n")
    proc = inspect("data.source=table", f"data.path={table}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"medtune: error: data.path={table}: no column 'answer' (data.answer_field); columns "
        "found: question, reply; set data.answer_field to one of them"
    ]


# -- near-duplicates -------------------------------------------------------------------------


def _brute_force(first, second, threshold):
    def grams(q):
        t = q.split()
        return {tuple(t)} if len(t) <= 3 else {tuple(t[k : k + 3]) for k in range(len(t) - 2)}

    pairs = set()
    for (i, a), (j, b) in itertools.product(enumerate(first), enumerate(second)):
        ga, gb = grams(a), grams(b)
        if len(ga & gb) / len(ga | gb) >= threshold:
            pairs.add((i, j))
    return pairs


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 1.0])
def test_near_duplicates_finds_exactly_what_brute_force_finds(threshold):
    rng = random.Random(threshold)
    words = "what is the risk of heart disease after stroke in adults with diabetes".split()
    questions = [" ".join(rng.choices(words[: rng.randint(5, 14)], k=rng.randint(2, 9)))
                 for _ in range(160)]  # fmt: skip
    first, second = questions[:80], questions[80:]
    found = near_duplicates(first, second, threshold)
    assert {(i, j) for i, j, _ in found} == _brute_force(first, second, threshold)
    assert all(score >= threshold for _, _, score in found)


def test_near_duplicates_on_all_of_medquad_is_fast():
    reference = shared_data("medquad", "medquad.jsonl")
    from trainables.data import normalize_question

    questions = sorted(
        {normalize_question(json.loads(line)["question"]) for line in open(reference)}
    )
    start = time.monotonic()
    pairs = near_duplicates(questions[::2], questions[1::2])
    assert time.monotonic() - start < 10  # about 1 s on a 2-core machine
    assert 0 < len(pairs) < len(questions)


@pytest.mark.parametrize(
    ("source", "max_length"), [("pubmedqa", 48), ("pubmedqa", 96), ("demo", 160)]
)
def test_inspect_counts_what_the_sweep_tokenization_counts(
    tmp_path, model_cache, source, max_length
):
    from trainables.data import load_records, split_records
    from trainables.models import load_tokenizer, prepare_model
    from trainables.prompts import encode_records
    from tune.config import load_config
    from tune.data_report import inspect_data

    overrides = ["model.name=tiny-random", f"data.max_length={max_length}"]
    if source == "pubmedqa":
        path = write_pubmedqa(tmp_path / "pubmedqa")
        overrides += ["data.source=pubmedqa", f"data.path={path}", "data.task=long_answer"]
    cfg = load_config(None, overrides)
    report = inspect_data(cfg)
    records, _ = load_records(cfg.data)
    splits = split_records(records, val_fraction=0.1, test_fraction=0.1, seed=0)
    tokenizer = load_tokenizer(prepare_model(cfg.model))
    too_long = 0
    for name, split in splits.items():
        _, stats = encode_records(tokenizer, split, max_length)
        assert report["splits"][name]["truncated"] == stats["truncated"], name
        too_long += stats["too_long"]
    assert report["dropped"]["too_long"] == too_long
    assert too_long + sum(s["truncated"] for s in report["splits"].values()) > 0  # not vacuous
