"""`make bench`: issue 7's lever "threads pinned to the trial's CPUs", measured.

    python benchmarks/pinning.py [--model smollm2-135m] [--precision auto] [--rounds 4]
                                 [--cpus-per-trial 1] [--batch 4] [--seq 128] [--steps 16]

Ray counts a trial's CPUs but does not say which cores they are, so a trial's torch threads
float over every core of its node. This runs as many concurrent medtune trials as the
machine's cores hold (`--cpus-per-trial` each; 2 trials of 1 CPU on a 2-core machine), in one
Ray Tune run, twice per round: once with trial i's training thread pinned to cores
[i*c, (i+1)*c) before it builds its model (torch's threads, started later, inherit the
pinning), once unpinned; the order alternates between rounds. Measured: each trial's training
tokens per second (median over its evaluation intervals after the first, as `bench.py`
part 1 reads them), their sum, and the wall time of the run; the paired ratio pinned /
unpinned of the summed throughput per round.
Results: benchmarks/results/<date>-pinning-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import _cpu_name, _ratios, _spread, _version, synthetic_examples  # noqa: E402


def _pinned_trial(config: dict, **kwargs):
    """medtune's trainable, its calling thread (the one that trains) first pinned to the cores
    in `config["cores"]` (none: unpinned)."""
    from trainables.trainable import train_lora

    config = dict(config)
    cores = config.pop("cores")
    if cores:
        os.sched_setaffinity(0, cores)  # 0: the calling thread; threads it starts inherit it
    return train_lora(config, **kwargs)


def _one_run(trainable, core_sets: list[list[int]], cpus: int) -> dict:
    from ray import tune as ray_tune

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        grid = ray_tune.Tuner(
            ray_tune.with_resources(trainable, {"cpu": cpus}),
            param_space={
                "learning_rate": 1e-4,
                "weight_decay": 0.0,
                "lora_r": 8,
                "cores": ray_tune.grid_search(core_sets),
            },
            # Fresh processes: a reused one would carry the other mode's pinning.
            tune_config=ray_tune.TuneConfig(reuse_actors=False),
            run_config=ray_tune.RunConfig(storage_path=tmp, name="pinning", verbose=0),
        ).fit()
        wall = time.perf_counter() - start
        if grid.errors:
            raise RuntimeError(f"a trial failed: {grid.errors[0]}")
        tps = [statistics.median(r.metrics_dataframe["tokens_per_second"].iloc[1:]) for r in grid]
    return {"tokens_per_s": tps, "sum_tokens_per_s": sum(tps), "wall_s": wall}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=4, help="pinned + unpinned runs each")
    parser.add_argument("--cpus-per-trial", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=16, help="training steps per trial")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON")
    args = parser.parse_args(argv)
    load_at_start = list(os.getloadavg())

    import ray
    from ray import tune as ray_tune

    from trainables.config import ModelConfig, TrainConfig
    from trainables.models import base_weights, prepare_model
    from trainables.precision import resolve_precision
    from trainables.trainable import TrialSettings
    from tune.cluster import init_local_ray, use_trial_worker_settings

    cores = sorted(os.sched_getaffinity(0))
    c = args.cpus_per_trial
    if not 1 <= c <= len(cores) // 2:
        parser.error(
            f"--cpus-per-trial: got {c}; two trials must fit on this machine's {len(cores)} "
            f"cores; pass at most {len(cores) // 2}"
        )
    core_sets = [cores[i : i + c] for i in range(0, len(cores) - c + 1, c)]
    path = str(prepare_model(ModelConfig(name=args.model)))
    precision = resolve_precision(args.precision, cuda=False)
    # Loaded once: the trials' shared base (as a sweep stores it) and its vocabulary.
    weights = base_weights(path, compute=precision)
    examples = synthetic_examples(weights.config.vocab_size, args.batch, args.seq, args.steps)
    settings = TrialSettings(
        model_path=path,
        model=ModelConfig(name=path),
        train=TrainConfig(
            max_steps=args.steps,
            eval_every=max(1, args.steps // 4),
            per_device_batch_size=args.batch,
            eval_max_examples=1,
            warmup_ratio=0.0,
            precision=precision,
        ),
        pad_token_id=0,
        cpus=c,
    )
    started_ray = not ray.is_initialized()
    if started_ray:
        use_trial_worker_settings()  # the trials' processes as `medtune sweep` starts them
        init_local_ray(num_cpus=len(cores), include_dashboard=False, log_to_driver=False)
    # As many trials as Ray's CPUs run at once (the test suite's Ray has 2).
    core_sets = core_sets[: int(ray.cluster_resources()["CPU"]) // c]
    if len(core_sets) < 2:
        raise SystemExit(f"pinning.py: Ray has room for {len(core_sets)} trial(s) of {c} CPUs")
    try:
        trainable = ray_tune.with_parameters(
            _pinned_trial,
            settings=settings,
            data={"train": examples, "validation": examples[:1]},
            weights=weights,
        )
        runs: dict[str, list[dict]] = {"pinned": [], "unpinned": []}
        for r in range(args.rounds):  # alternating, so drifts in the machine hit both modes
            for mode in ("pinned", "unpinned") if r % 2 == 0 else ("unpinned", "pinned"):
                sets = core_sets if mode == "pinned" else [[] for _ in core_sets]
                runs[mode].append(_one_run(trainable, sets, c))
                print(f"round {r} {mode}: {runs[mode][-1]}", flush=True)
    finally:
        if started_ray:
            ray.shutdown()
    sums = {m: [run["sum_tokens_per_s"] for run in runs[m]] for m in runs}
    out = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "processor": _cpu_name(),
            "cores": len(cores),
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
            "python": sys.version.split()[0],
            **{p: _version(p) for p in ("torch", "transformers", "peft", "ray")},
        },
        "model": args.model,
        "precision": precision,
        "trials_at_once": len(core_sets),
        "cpus_per_trial": c,
        "core_sets": core_sets,
        "batch": args.batch,
        "seq_len": args.seq,
        "steps": args.steps,
        "rounds": args.rounds,
        "runs": runs,
        "sum_tokens_per_s": {m: _spread(sums[m]) for m in sums},
        "pinned_vs_unpinned": _ratios(sums["pinned"], sums["unpinned"]),
        "wall_pinned_vs_unpinned": _ratios(
            [run["wall_s"] for run in runs["pinned"]], [run["wall_s"] for run in runs["unpinned"]]
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{datetime.now():%Y%m%d-%H%M%S}-pinning-{args.model}.json"
    (args.out / name).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("sum_tokens_per_s", "pinned_vs_unpinned")}, indent=2))
    return out


if __name__ == "__main__":
    main()
