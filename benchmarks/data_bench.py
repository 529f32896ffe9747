"""Data preparation benchmark: read, clean, split and tokenize a whole dataset, cold and cached.

    python benchmarks/data_bench.py                                  # all of MedQuAD, SmolLM2
    python benchmarks/data_bench.py --source demo --model tiny-random --repeats 1   # smoke

Runs what `medtune sweep` runs before Ray starts, with the same functions: `load_records`
(read the upstream files, clean), `split_records` (group split), and `encode_split_cached`
per split with the configured tokenizer. "cold" starts from an empty token cache (every split
is tokenized and written); "cached" runs again on the same cache (reading, cleaning and
splitting again, tokens from the cache files). Each repeat uses a fresh cache folder, cold
then cached; min/median/max over `--repeats`. Loading the tokenizer is timed apart (the model
itself is converted once per machine beforehand and not timed).

Default data: ../shared/data/medquad/MedQuAD-xml.tar.gz (the whole upstream XML tree, 16,423
answered pairs). Results: benchmarks/results/<date>-data-<source>-<model>.json with the
machine, date and versions; BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEDQUAD = HERE.parents[1] / "shared" / "data" / "medquad" / "MedQuAD-xml.tar.gz"


def prepare_once(data, tokenizer, cache_dir: Path) -> dict:
    """One full preparation, timed by phase; returns the timings and what it produced."""
    from trainables.data import load_records, split_records
    from trainables.tokenized import encode_split_cached

    t0 = time.perf_counter()
    records, report = load_records(data)
    t1 = time.perf_counter()
    splits = split_records(
        records, val_fraction=data.val_fraction, test_fraction=data.test_fraction, seed=data.seed
    )
    t2 = time.perf_counter()
    encoded = {
        name: encode_split_cached(
            tokenizer,
            split,
            max_length=data.max_length,
            system_prompt=data.system_prompt,
            cache_dir=cache_dir,
        )
        for name, split in splits.items()
    }
    t3 = time.perf_counter()
    return {
        "seconds": {
            "read_clean": t1 - t0,
            "split": t2 - t1,
            "tokenize": t3 - t2,
            "total": t3 - t0,
        },
        "records_read": report.read,
        "records_kept": len(records),
        "dropped": dict(report.dropped),
        "splits": {name: len(split) for name, split in splits.items()},
        "examples": {name: len(e.examples) for name, e in encoded.items()},
        "tokens": sum(len(ex["input_ids"]) for e in encoded.values() for ex in e.examples),
        "truncated": sum(e.truncated for e in encoded.values()),
        "too_long": sum(e.too_long for e in encoded.values()),
        "from_cache": all(e.from_cache for e in encoded.values()),
        "_examples": {name: e.examples for name, e in encoded.items()},
    }


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="medquad", help="data.source (default medquad)")
    parser.add_argument("--path", default=str(MEDQUAD), help="data.path (unused for demo)")
    parser.add_argument("--model", default="smollm2-135m", help="whose tokenizer")
    parser.add_argument("--max-length", type=int, default=256, help="data.max_length")
    parser.add_argument("--repeats", type=int, default=3, help="cold + cached runs")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="result folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from trainables.config import DataConfig, ModelConfig
    from trainables.models import load_tokenizer, prepare_model

    data = DataConfig(
        source=args.source,
        path=None if args.source == "demo" else args.path,
        max_length=args.max_length,
    )
    if data.path and not data.path.startswith("hub:") and not Path(data.path).exists():
        parser.exit(
            2,
            f"data_bench: --path {data.path}: no such file; the MedQuAD tree lives in "
            "../shared/data (pass --path to yours, or --source demo for the demo set)\n",
        )
    model_path = prepare_model(ModelConfig(name=args.model))  # converted once, not timed
    start = time.perf_counter()
    tokenizer = load_tokenizer(model_path)
    tokenizer_seconds = time.perf_counter() - start

    load_start = os.getloadavg()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="medtune-bench-tokens-") as cache:
            cold = prepare_once(data, tokenizer, Path(cache))
            cached = prepare_once(data, tokenizer, Path(cache))
        if cold["from_cache"] or not cached["from_cache"]:
            raise RuntimeError("the token cache did not behave: cold hit or cached miss")
        if cold.pop("_examples") != cached.pop("_examples"):
            raise RuntimeError("tokens read from the cache differ from the tokens written")
        runs.append({"cold": cold, "cached": cached})

    phases = ("read_clean", "split", "tokenize", "total")
    out = {
        "benchmark": "data preparation: read, clean, split, tokenize (benchmarks/data_bench.py)",
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "processor": _cpu_name(),
            "cores": os.cpu_count(),
            "load_average_at_start": load_start,
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
            **{p: _version(p) for p in ("medtune", "transformers", "tokenizers", "numpy", "torch")},
        },
        "source": args.source,
        "path": data.path,
        "model": args.model,
        "max_length": args.max_length,
        "repeats": args.repeats,
        "tokenizer_load_seconds": tokenizer_seconds,
        "counts": {k: v for k, v in runs[0]["cold"].items() if k not in ("seconds", "from_cache")},
        "cold_seconds": {p: _spread([r["cold"]["seconds"][p] for r in runs]) for p in phases},
        "cached_seconds": {p: _spread([r["cached"]["seconds"][p] for r in runs]) for p in phases},
        "runs": [{k: r[k]["seconds"] for k in ("cold", "cached")} for r in runs],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{datetime.now():%Y%m%d-%H%M%S}-data-{args.source}-{args.model}.json"
    (args.out / name).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    from importlib.metadata import version

    try:
        return version(package)
    except Exception:
        return None


if __name__ == "__main__":
    main()
