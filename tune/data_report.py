"""`medtune data inspect`: what the configured data holds, before a sweep spends time on it.

    medtune data inspect data.source=pubmedqa data.path=../shared/data/pubmedqa
    medtune data inspect --json --config my_sweep.yaml

Reads, cleans and splits the data exactly as `medtune sweep` would, tokenizes it with the
configured model's tokenizer, and reports: records read and dropped by reason, split sizes and
groups, lengths in tokens, truncation at `data.max_length`, and questions shared across splits
(same group, same normalized question, or token 3-gram Jaccard overlap >= NEAR_DUPLICATE).
`medtune sweep` writes the same report as `results/<name>/data.json` (`data_summary`). Tokens
come from the cache (`trainables.tokenized`) when the same data was encoded the same way.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape

from trainables.data import (
    SPLITS,
    DataReport,
    Record,
    fingerprint,
    load_records,
    normalize_question,
    shared_between,
    split_records,
)
from trainables.models import cache_root, load_tokenizer, prepare_model
from trainables.tokenized import EncodedSplit, encode_split_cached
from tune.config import SweepConfig, load_config

__all__ = [
    "NEAR_DUPLICATE",
    "data_summary",
    "encode_splits",
    "inspect_data",
    "near_duplicates",
    "run_inspect",
]

# Token 3-gram Jaccard at which two questions count as near-duplicates: a reworded question
# scores 0.8 and more, short templated questions about different conditions ("What are the
# symptoms of X?") 0.3-0.5. Long templates differing in one word also pass, hence the examples.
NEAR_DUPLICATE = 0.8
NGRAM = 3
_PAIRS = (("test", "train"), ("validation", "train"), ("test", "validation"))
_EXAMPLES = 3  # near-duplicate pairs shown per split pair


def run_inspect(args, console: Console) -> int:
    """The CLI entry point: print the report as text, or as one JSON object with --json."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    cfg = load_config(args.config, args.overrides)
    report = inspect_data(cfg)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_report(report, console)
    return 0


def inspect_data(cfg: SweepConfig) -> dict:
    """The data report of a sweep config, as a JSON-ready dict."""
    data = cfg.data
    records, loaded = load_records(data)
    splits = split_records(
        records, val_fraction=data.val_fraction, test_fraction=data.test_fraction, seed=data.seed
    )
    tokenizer = load_tokenizer(prepare_model(cfg.model), cfg.model.trust_remote_code)
    return data_summary(cfg, loaded, splits, encode_splits(cfg, tokenizer, splits))


def encode_splits(cfg: SweepConfig, tokenizer, splits: dict[str, list[Record]]) -> dict:
    """Every split encoded at data.max_length, from the token cache where it holds them."""
    cache = cache_root(cfg.model) / "tokens"
    return {
        name: encode_split_cached(
            tokenizer,
            split,
            max_length=cfg.data.max_length,
            system_prompt=cfg.data.system_prompt,
            cache_dir=cache,
        )
        for name, split in splits.items()
    }


def data_summary(
    cfg: SweepConfig,
    loaded: DataReport,
    splits: dict[str, list[Record]],
    encoded: dict[str, EncodedSplit],
) -> dict:
    """What `medtune data inspect --json` prints and a sweep writes as `data.json`.

    Records read and dropped by reason, per split: records, groups, examples, token length
    percentiles, truncation, labels, fingerprint and whether the tokens came from the cache;
    questions shared across splits; the fingerprint of all splits together.
    """
    data = cfg.data
    per_split = {name: _split_stats(splits[name], encoded[name]) for name in SPLITS}
    too_long = sum(e.too_long for e in encoded.values())
    dropped = {"empty": 0, "duplicate": 0, "filtered": 0} | dict(loaded.dropped)
    cache_files = {e.cache_file for e in encoded.values() if e.cache_file}
    return {
        "source": data.source,
        "path": data.path,
        **({"task": data.task} if data.source == "pubmedqa" else {}),
        "model": cfg.model.name,
        "max_length": data.max_length,
        "system_prompt": data.system_prompt,
        "records_read": loaded.read,
        "records_kept": sum(len(s) for s in splits.values()) - too_long,
        "dropped": dropped | {"too_long": too_long},
        "splits": per_split,
        "overlap": {f"{a}/{b}": _overlap(splits[a], splits[b]) for a, b in _PAIRS},
        "near_duplicate_threshold": NEAR_DUPLICATE,
        "fingerprint": fingerprint(r for name in SPLITS for r in splits[name]),
        "tokens_cache_dir": str(Path(next(iter(cache_files))).parent) if cache_files else None,
        "tokens_from_cache": all(e.from_cache for e in encoded.values()),
    }


def near_duplicates(
    first: list[str], second: list[str], threshold: float = NEAR_DUPLICATE
) -> list[tuple[int, int, float]]:
    """Index pairs (i, j) whose token 3-gram sets have Jaccard >= threshold, with the score.

    Exact and fast on large sets (all of MedQuAD in about a second): a pair reaching the
    threshold must share one of the rarest `|x| - ceil(threshold * |x|) + 1` n-grams of each
    side (the prefix filter of all-pairs similarity search), so only the second side's
    prefixes are indexed and only pairs sharing one are scored.
    """
    grams = [_ngrams(q) for q in first], [_ngrams(q) for q in second]
    freq = Counter(g for side in grams for s in side for g in s)
    # Rarest first; the n-gram itself breaks ties so every set is ordered the same way.
    ordered = [[sorted(s, key=lambda g: (freq[g], g)) for s in side] for side in grams]
    index: dict[tuple, list[int]] = {}
    for j, s in enumerate(ordered[1]):
        for g in s[: _prefix(len(s), threshold)]:
            index.setdefault(g, []).append(j)
    pairs = []
    for i, s in enumerate(ordered[0]):
        candidates = {j for g in s[: _prefix(len(s), threshold)] for j in index.get(g, ())}
        for j in sorted(candidates):
            a, b = grams[0][i], grams[1][j]
            score = len(a & b) / len(a | b)
            if score >= threshold:
                pairs.append((i, j, score))
    return pairs


# -- helpers ---------------------------------------------------------------------------------


def _split_stats(records: list[Record], encoded: EncodedSplit) -> dict:
    """Records, groups, examples, lengths in tokens and truncation at data.max_length."""
    stats = {
        "records": len(records),
        "groups": len({r.group for r in records}),
        "examples": len(encoded.examples),
        "tokens": _percentiles(encoded.lengths),
        "truncated": encoded.truncated,
        "context_cut": encoded.context_cut,
        "too_long": encoded.too_long,
        "fingerprint": encoded.fingerprint or fingerprint(records),
        "tokens_from_cache": encoded.from_cache,
    }
    labels = Counter(r.label for r in records if r.label)
    if labels:
        stats["labels"] = dict(sorted(labels.items()))
    return stats


def _percentiles(lengths: list[int]) -> dict:
    if not lengths:
        return {"p50": 0, "p95": 0, "max": 0}
    p50, p95 = np.percentile(lengths, [50, 95], method="nearest")
    return {"p50": int(p50), "p95": int(p95), "max": int(max(lengths))}


def _overlap(a: list[Record], b: list[Record]) -> dict:
    groups, questions = shared_between(a, b)
    qa = sorted({normalize_question(r.question): r.question for r in a}.items())
    qb = sorted({normalize_question(r.question): r.question for r in b}.items())
    near = [
        (qa[i][1], qb[j][1], score)
        for i, j, score in near_duplicates([k for k, _ in qa], [k for k, _ in qb])
        if qa[i][0] != qb[j][0]  # identical ones are counted as the same question
    ]
    near.sort(key=lambda p: -p[2])
    return {
        "shared_groups": len(groups),
        "same_question": len(questions),
        "near_duplicates": len({q for q, _, _ in near}),
        "examples": [
            {"question": q, "other": o, "jaccard": round(s, 3)} for q, o, s in near[:_EXAMPLES]
        ],
    }


def _ngrams(normalized: str) -> frozenset[tuple[str, ...]]:
    tokens = tuple(normalized.split())
    if len(tokens) <= NGRAM:
        return frozenset([tokens])  # a short question is its one n-gram
    return frozenset(tokens[k : k + NGRAM] for k in range(len(tokens) - NGRAM + 1))


def _prefix(size: int, threshold: float) -> int:
    # The 1e-9 keeps float error from rounding e.g. 0.8 * 5 up to 5.
    return size - math.ceil(threshold * size - 1e-9) + 1


def _print_report(report: dict, console: Console) -> None:
    out = partial(console.print, soft_wrap=True)  # long paths and questions stay on one line
    where = f" from {report['path']}" if report["path"] else ""
    task = f", task {report['task']}" if "task" in report else ""
    out(
        f"[bold]Data[/]: {report['source']}{escape(where)}{task}; tokens of {report['model']}, "
        f"data.max_length {report['max_length']}"
    )
    dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in report["dropped"].items())
    out(f"Records: {report['records_read']} read, {report['records_kept']} kept; dropped {dropped}")
    if report["tokens_cache_dir"]:
        how = "read from the cache" if report["tokens_from_cache"] else "encoded now and cached"
        out(f"Tokens: {how} in {escape(report['tokens_cache_dir'])}")
    columns = ("records", "groups", "p50", "p95", "max", "truncated", "context cut")
    out("\n" + f"{'split':<12}" + "".join(f"{c:>12}" for c in columns) + "  (lengths in tokens)")
    for name, s in report["splits"].items():
        t = s["tokens"]
        values = (s["records"], s["groups"], t["p50"], t["p95"], t["max"], s["truncated"])
        line = f"{name:<12}" + "".join(f"{v:>12}" for v in (*values, s["context_cut"]))
        if "labels" in s:
            line += "  " + ", ".join(f"{k} {v}" for k, v in s["labels"].items())
        out(line)
    columns = ("same group", "same question", "near-duplicate")
    threshold = report["near_duplicate_threshold"]
    out("\n" + f"{'across splits':<18}" + "".join(f"{c:>16}" for c in columns), end="")
    out(f"  (token 3-gram Jaccard >= {threshold})")
    examples = []
    for pair, o in report["overlap"].items():
        values = (o["shared_groups"], o["same_question"], o["near_duplicates"])
        out(f"{pair:<18}" + "".join(f"{v:>16}" for v in values))
        first, second = pair.split("/")
        examples += [(first, second, e) for e in o["examples"]]
    for first, second, e in examples:
        out(
            f"  {first} {e['question']!r} ~ {second} {e['other']!r} ({e['jaccard']:.2f})",
            markup=False,
        )
