"""What `medtune serve` gains from answering requests that arrive together in one batch.

    python benchmarks/serve_batch.py                                       # SmolLM2, 8 x 64
    python benchmarks/serve_batch.py --model tiny-random --questions 2 --tokens 4 --repeats 1

The same greedy generation `medtune serve` runs (`generate_completions`, what
`ExportedModel.complete_many` calls): N demo questions answered one after another, as a
server without batching answers N clients, against the same N in one batch. Both sides run in
each repeat, alternating which goes first; reported: seconds per side, the batch's time over
the one-by-one time (min/median/max), generated tokens per second, and how many answers are
the same text both ways (greedy decoding in a padded batch may differ in the last bits of a
logit, rarely enough to flip a token). A third side is the batch as served with `"stream":
true` (every step's answers followed): its time to the first token, and its whole time over
the plain batch's (what following the answers costs). Decoding reads every weight once per
generated token, whether for one sequence or eight, which is what a batch shares. Results:
benchmarks/results/<date>-serve-batch-<model>.json with the machine, date and versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import _cpu_name, _spread, _version  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="model.name (default SmolLM2)")
    parser.add_argument("--questions", type=int, default=8, help="how many arrive together")
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens of each")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="result folder")
    args = parser.parse_args(argv)

    import torch

    from trainables.config import DataConfig, ModelConfig
    from trainables.data import Record, load_records
    from trainables.evaluation import generate_completions
    from trainables.models import load_model, load_tokenizer, prepare_model

    path = prepare_model(ModelConfig(name=args.model))
    model, tokenizer = load_model(path).eval(), load_tokenizer(path)
    demo, _ = load_records(DataConfig(source="demo"))
    records = [
        Record(id=str(i), question=r.question, answer="", group=str(i), source="user")
        for i, r in enumerate(demo[: args.questions])
    ]

    def one_by_one():
        return [
            generate_completions(model, tokenizer, [r], max_new_tokens=args.tokens)[0]
            for r in records
        ]

    def batched():
        return generate_completions(
            model, tokenizer, records, max_new_tokens=args.tokens, batch_size=len(records)
        )

    first_token: dict[int, float] = {}  # each repeat's streamed batch: its first token's time

    def streamed():
        # The batch as `medtune serve` runs it for "stream": true: every step's answers
        # followed (on_step), the first token's time taken.
        start = time.perf_counter()

        def on_step(_start, _partials):
            first_token.setdefault(len(runs), time.perf_counter() - start)

        return generate_completions(
            model,
            tokenizer,
            records,
            max_new_tokens=args.tokens,
            batch_size=len(records),
            on_step=on_step,
        )

    load_start = list(os.getloadavg())
    runs = []
    for repeat in range(args.repeats):
        sides = [("one_by_one", one_by_one), ("batched", batched), ("streamed", streamed)]
        run = {}
        for name, side in sides[repeat % 3 :] + sides[: repeat % 3]:  # each goes first in turn
            start = time.perf_counter()
            completions = side()
            run[name] = {
                "seconds": time.perf_counter() - start,
                "tokens": sum(c.completion_tokens for c in completions),
                "texts": [c.text for c in completions],
            }
        pairs = zip(run["one_by_one"]["texts"], run["batched"]["texts"], strict=True)
        same = sum(a == b for a, b in pairs)
        runs.append(
            {
                "first": sides[repeat % 3][0],
                **{k: {"seconds": v["seconds"], "tokens": v["tokens"]} for k, v in run.items()},
                "batched_over_one_by_one": run["batched"]["seconds"] / run["one_by_one"]["seconds"],
                "same_answers": same,
                "streamed_first_token_seconds": first_token[repeat],
                "streamed_over_batched": run["streamed"]["seconds"] / run["batched"]["seconds"],
                "streamed_same_answers": run["streamed"]["texts"] == run["batched"]["texts"],
            }
        )

    out = {
        "benchmark": "serve: one batch against answers in turn (benchmarks/serve_batch.py)",
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "processor": _cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_start": load_start,
            "load_average_at_end": list(os.getloadavg()),
            "python": platform.python_version(),
            **{p: _version(p) for p in ("medtune", "torch", "transformers")},
        },
        "model": args.model,
        "dtype": str(model.dtype),
        "questions": args.questions,
        "max_tokens": args.tokens,
        "repeats": args.repeats,
        "batched_over_one_by_one": _spread([r["batched_over_one_by_one"] for r in runs]),
        "tokens_per_s": {
            side: _spread([r[side]["tokens"] / r[side]["seconds"] for r in runs])
            for side in ("one_by_one", "batched", "streamed")
        },
        # A streaming client's first token against the whole batch a plain client waits for.
        "streamed_first_token_seconds": _spread([r["streamed_first_token_seconds"] for r in runs]),
        "batched_seconds": _spread([r["batched"]["seconds"] for r in runs]),
        "streamed_over_batched": _spread([r["streamed_over_batched"] for r in runs]),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{datetime.now():%Y%m%d-%H%M%S}-serve-batch-{args.model}.json"
    (args.out / name).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
