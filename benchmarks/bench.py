"""`make bench`: how fast one medtune trial trains, against the machine's limits.

    python benchmarks/bench.py [--model smollm2-135m] [--batch 8] [--seq 256] [--steps 9]
        [--precisions fp32,auto] [--skip PARTS]

Measures in one run of this script, on the same model, batch, sequence length and threads:
  1. the matmul peak of this machine through torch (GFLOP/s), fp32 and bf16;
  2. a bare PyTorch LoRA loop (PEFT LoRA r=8 on q/v, AdamW, frozen base): tokens/s, on
     glibc's malloc (as a script runs) and on the jemalloc Ray ships with medtune's settings
     (`tune.cluster.JEMALLOC_CONF`, what the trial runs on: the like-for-like baseline);
  3. one medtune trial (the real `train_lora` inside a one-trial Ray Tune run): tokens/s;
     2 and 3 alternate, --repeats times each, each run in a fresh process of its own, with
     the trial's LoRA settings (r=8, dropout), in fp32 and in the precision
     `train.precision=auto` picks here (bf16 on AMX and AVX512_BF16 CPUs; the bare loop then
     runs under the same autocast).
The matmul-bound ceiling is peak / (4 x parameters) tokens/s: forward (2 FLOP per weight) and
the input-gradient backward (2 more); LoRA's weight gradients are negligible.
  4. trial start-up: from the start of a trial's function to the start of its first training
     step, with base weights and tokenized data in the object store ("warm") against a trial
     that loads the weights from disk and tokenizes ("disk"), and one that converts the model
     first ("convert", an empty model cache); alternating, --repeats times each;
  5. memory: peak memory of one trial against two concurrent trials sharing the base weights
     through the object store, and two that load their own copy ("two_disk"), sampled from
     /proc/<pid>/smaps_rollup of the trial processes (USS: private memory; shared pages counted
     once); each also with `train.activation_checkpointing` ("*_checkpointed"); alternating,
     --repeats times each; `--mem-runs` picks some of them. `--model` also takes a model
     folder, such as a larger SmolLM2 shape from `benchmarks/shaped_model.py`;
  6. levers: padding share of length-grouped vs random batches; logits at answer positions only
     vs over the whole sequence: forward + backward time, alternating, and peak memory of one
     such step in a fresh process ("logits_memory").
Start-up, memory and levers use the demo data as the default sweep does (batch 4, 256 tokens).
Results go to benchmarks/results/<date>-<model>.json; BENCHMARKS.md quotes them with the
machine. `--skip` leaves parts out (e.g. --skip trial,startup).
"""

from __future__ import annotations

import argparse
import dataclasses
import faulthandler
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def matmul_gflops(threads: int, n: int = 2048, reps: int = 10, dtype=torch.float32) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def synthetic_examples(vocab: int, batch: int, seq: int, steps: int) -> list[dict]:
    """Fixed-length examples, every token labelled: no padding, so tokens mean work."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch * steps, seq), generator=g).tolist()
    return [{"input_ids": row, "labels": row} for row in ids]


def bare_loop(
    model_path: str, examples: list[dict], batch: int, threads: int, precision: str = "fp32"
) -> float:
    from peft import LoraConfig, get_peft_model

    from trainables.config import TrainConfig
    from trainables.models import load_model
    from trainables.precision import autocast
    from trainables.prompts import collate

    torch.set_num_threads(threads)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=TrainConfig().lora_dropout,  # as the trial trains (0 by default)
        target_modules=["q_proj", "v_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(load_model(model_path), lora)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = [collate(examples[i : i + batch], 0) for i in range(0, len(examples), batch)]
    warmup = 2
    for i, b in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        with autocast(precision, "cpu"):  # mixed precision as the Trainer's bf16=True does it
            loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[warmup:])
    return tokens / (time.perf_counter() - start)


def medtune_trial(
    model_path: str, examples: list[dict], batch: int, threads: int, precision: str = "fp32"
) -> float:
    import ray
    from ray import tune as ray_tune

    from trainables.config import ModelConfig, TrainConfig
    from trainables.models import base_weights
    from trainables.precision import resolve_precision
    from trainables.trainable import TrialSettings, train_lora
    from tune.cluster import init_local_ray, use_trial_worker_settings

    steps = len(examples) // batch
    eval_every = max(1, steps // 3)
    settings = TrialSettings(
        model_path=model_path,
        model=ModelConfig(name=model_path),
        train=TrainConfig(
            max_steps=steps,
            eval_every=eval_every,
            per_device_batch_size=batch,
            eval_max_examples=1,
            warmup_ratio=0.0,
            precision=precision,
        ),
        pad_token_id=0,
        cpus=threads,
    )
    use_trial_worker_settings()  # as `medtune sweep` starts its local Ray
    # A new Ray on this machine (never a `ray start` cluster that happens to run here).
    init_local_ray(num_cpus=threads, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tuner = ray_tune.Tuner(
                ray_tune.with_resources(
                    ray_tune.with_parameters(
                        train_lora,
                        settings=settings,
                        data={"train": examples, "validation": examples[:1]},
                        # As a sweep shares it: linear weights in the format it computes in.
                        weights=base_weights(
                            model_path, compute=resolve_precision(precision, cuda=False)
                        ),
                    ),
                    {"cpu": threads},
                ),
                param_space={"learning_rate": 1e-4, "weight_decay": 0.0, "lora_r": 8},
                run_config=ray_tune.RunConfig(storage_path=tmp, name="bench", verbose=0),
            )
            df = tuner.fit()[0].metrics_dataframe
    finally:
        ray.shutdown()
    # The first interval includes start-up and warm-up; later ones are steady state.
    return statistics.median(df["tokens_per_second"].iloc[1:])


def trial_efficiency(path: str, params: int, vocab: int, args) -> dict:
    """Part 1 in fp32 and in the precision `train.precision=auto` picks here (bf16 on AMX
    and AVX512_BF16 CPUs): trial against bare loop at the same precision, and against the
    matmul ceiling of that precision (a bf16 trial against the fp32 ceiling is reported too,
    as the issue defines the ceiling, but it is not the like-for-like figure)."""
    from trainables.precision import resolve_precision
    from tune.cluster import JEMALLOC_CONF, ray_jemalloc

    asked = args.precisions.split(",")
    precisions = list(dict.fromkeys(resolve_precision(p, cuda=False) for p in asked))
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    measured = list(dict.fromkeys(["fp32", *precisions]))  # the fp32 ceiling is the issue's
    peaks = {p: [matmul_gflops(args.threads, dtype=dtypes[p])] for p in measured}
    bare: dict[str, list[float]] = {p: [] for p in precisions}
    bare_je: dict[str, list[float]] = {p: [] for p in precisions}
    trial: dict[str, list[float]] = {p: [] for p in precisions}
    jemalloc = ray_jemalloc()
    for _ in range(args.repeats):  # alternating, so drifts in the machine hit every side
        for p in precisions:
            bare[p].append(_side_in_subprocess("bare", path, vocab, args, p))
            if jemalloc:
                env = {"LD_PRELOAD": jemalloc, "MALLOC_CONF": JEMALLOC_CONF}
                bare_je[p].append(_side_in_subprocess("bare", path, vocab, args, p, env))
            trial[p].append(_side_in_subprocess("trial", path, vocab, args, p))
    for p in measured:
        peaks[p].append(matmul_gflops(args.threads, dtype=dtypes[p]))
    ceilings = {p: statistics.median(peaks[p]) * 1e9 / (4 * params) for p in measured}
    out: dict = {}
    for p in precisions:
        out[p] = {
            "matmul_gflops": peaks[p],
            "ceiling_tokens_per_s": ceilings[p],
            # Medians over the repeats; the spreads and paired ratios beside them.
            "bare_lora_tokens_per_s": statistics.median(bare[p]),
            "medtune_trial_tokens_per_s": statistics.median(trial[p]),
            "bare_lora_runs": _spread(bare[p]),
            "medtune_trial_runs": _spread(trial[p]),
            "trial_vs_bare": _ratios(trial[p], bare[p]),
            "trial_vs_ceiling": _spread([t / ceilings[p] for t in trial[p]]),
            "trial_vs_fp32_ceiling": _spread([t / ceilings["fp32"] for t in trial[p]]),
            "fp32_matmul_gflops": peaks["fp32"],  # the ceiling the ratio above divides by
            "fp32_ceiling_tokens_per_s": ceilings["fp32"],
        }
        if jemalloc:
            # Like for like: the bare loop on the allocator and settings the trial runs on.
            out[p]["bare_lora_jemalloc_runs"] = _spread(bare_je[p])
            out[p]["trial_vs_bare_jemalloc"] = _ratios(trial[p], bare_je[p])
            out[p]["bare_jemalloc_vs_bare"] = _ratios(bare_je[p], bare[p])
    auto = [p for p in precisions if p != "fp32"]
    if "fp32" in precisions and auto:
        out["auto_vs_fp32_trial"] = _ratios(trial[auto[0]], trial["fp32"])
    return out


_SIDE_RESULT = "medtune-bench-side tokens/s: "


def _side_in_subprocess(
    side: str, path: str, vocab: int, args, precision: str, env: dict | None = None
) -> float:
    """Tokens/s of one run of the bare loop or the trial, in a fresh Python process (with
    `env` added to its environment).

    Run from the process that had just run the bare loop, the bf16 trial trained at 435-451
    tokens/s against 591-592 from a fresh one (BENCHMARKS.md, ninth session), so neither side
    runs in a process the other has used."""
    spec = {
        "side": side,
        "path": path,
        "vocab": vocab,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "threads": args.threads,
        "precision": precision,
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "_side", json.dumps(spec)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith(_SIDE_RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{side} ({precision}) exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
    return float(lines[-1].removeprefix(_SIDE_RESULT))


def _run_side(spec: dict) -> None:
    examples = synthetic_examples(spec["vocab"], spec["batch"], spec["seq"], spec["steps"])
    run = bare_loop if spec["side"] == "bare" else medtune_trial
    tps = run(spec["path"], examples, spec["batch"], spec["threads"], spec["precision"])
    print(f"{_SIDE_RESULT}{tps}", flush=True)


# -- 4 and 5: trial start-up and memory with the base in the object store ----------------------


def demo_data(model_path: str, max_length: int = 256) -> dict[str, list[dict]]:
    """The default sweep's tokenized train/validation splits (what a sweep puts in the store)."""
    from trainables.config import DataConfig
    from trainables.data import load_records, split_records
    from trainables.models import load_tokenizer
    from trainables.prompts import encode_records

    cfg = DataConfig(source="demo", max_length=max_length)
    records, _ = load_records(cfg)
    splits = split_records(
        records, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )
    tok = load_tokenizer(model_path)
    return {
        name: encode_records(tok, splits[name], max_length)[0] for name in ("train", "validation")
    }


def _settings(
    model_path: str,
    model: str,
    *,
    steps: int,
    batch: int,
    threads: int,
    checkpointing: bool = False,
):
    from trainables.config import ModelConfig, TrainConfig
    from trainables.models import load_tokenizer
    from trainables.trainable import TrialSettings

    return TrialSettings(
        model_path=model_path,
        model=ModelConfig(name=model),
        train=TrainConfig(
            max_steps=steps,
            eval_every=steps,
            per_device_batch_size=batch,
            eval_max_examples=4,
            warmup_ratio=0.0,
            activation_checkpointing=checkpointing,
        ),
        pad_token_id=load_tokenizer(model_path).pad_token_id,
        cpus=threads,
    )


def _first_step_clock(start: float):
    from transformers import TrainerCallback

    class FirstStep(TrainerCallback):
        seconds = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.seconds is None:
                self.seconds = time.perf_counter() - start

    return FirstStep()


def _startup_trial(config: dict, *, refs: dict, model: str) -> None:
    """One trial, timed from its function's start (before it fetches anything) to the start
    of its first training step. warm: weights and data from the object store; disk: weights
    from the cached safetensors, data tokenized here; convert: the model converted (or built)
    into an empty cache first, then as disk."""
    import ray
    from ray import tune as ray_tune

    from trainables.config import ModelConfig
    from trainables.models import prepare_model
    from trainables.trainable import train_lora

    start = time.perf_counter()
    variant = config["variant"]
    settings = ray.get(refs["settings"])
    with tempfile.TemporaryDirectory() as cache:
        if variant == "warm":
            data, weights = ray.get(refs["data"]), ray.get(refs["weights"])
        else:
            if variant == "convert":
                path = prepare_model(ModelConfig(name=model, cache_dir=cache))
                settings = dataclasses.replace(settings, model_path=path)
            data, weights = demo_data(settings.model_path), None
        clock = _first_step_clock(start)
        train_lora(config, settings=settings, data=data, weights=weights, callbacks=(clock,))
    ray_tune.report({"startup_s": clock.seconds, "variant": variant})


def _run_tuner(trainable, param_space, *, cpus: int, concurrent: int | None = None):
    from ray import tune as ray_tune

    with tempfile.TemporaryDirectory() as tmp:
        grid = ray_tune.Tuner(
            ray_tune.with_resources(trainable, {"cpu": cpus}),
            param_space=param_space,
            tune_config=ray_tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=False),
            run_config=ray_tune.RunConfig(storage_path=tmp, name="bench", verbose=0),
        ).fit()
        errors = [r.error for r in grid if r.error]
        if errors:
            raise RuntimeError(f"benchmark trial failed: {errors[0]}")
        return [r.metrics for r in grid]


LORA = {"learning_rate": 1e-4, "weight_decay": 0.0, "lora_r": 8}


def startup(model: str, path: str, data: dict, repeats: int, threads: int) -> dict:
    import ray
    from ray import tune as ray_tune

    from trainables.models import base_weights
    from trainables.precision import resolve_precision

    settings = _settings(path, model, steps=1, batch=1, threads=threads)
    compute = resolve_precision(settings.train.precision, cuda=False)  # as a sweep stores it
    refs = {
        "settings": ray.put(settings),
        "data": ray.put(data),
        "weights": ray.put(base_weights(path, compute=compute)),
    }
    variants = ["warm", "disk", "convert"]
    order = [v for _ in range(repeats) for v in variants]  # alternating
    metrics = _run_tuner(
        ray_tune.with_parameters(_startup_trial, refs=refs, model=model),
        {**LORA, "variant": ray_tune.grid_search(order)},
        cpus=threads,
        concurrent=1,
    )
    out = {v: _spread([m["startup_s"] for m in metrics if m["variant"] == v]) for v in variants}
    out["disk_vs_warm"] = _ratios(out["disk"]["values"], out["warm"]["values"])
    return out


def _memory_trial(
    config: dict, *, settings, checkpointed, data, weights, weights_fp32, pids: str
) -> None:
    from trainables.trainable import train_lora

    Path(pids, str(os.getpid())).touch()
    train_lora(
        config,
        settings=checkpointed if config["checkpointing"] else settings,
        data=data,
        weights={"store": weights, "store_fp32": weights_fp32, "disk": None}[config["base"]],
    )


def _rollup(pid: int) -> dict[str, int] | None:
    """kB figures of /proc/<pid>/smaps_rollup; USS = private pages, shared = RSS - USS."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = {}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(":")
        kb[key] = int(value.split()[0])
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return {"rss": kb["Rss"], "pss": kb["Pss"], "uss": uss, "shared": kb["Rss"] - uss}


class _Sampler(threading.Thread):
    """Sums the trial processes' memory every 0.1 s; keeps the peaks (MiB).

    footprint = sum of USS + the largest shared set: the trials' private pages plus the pages
    they share (libraries, and the base weights in the object store) counted once."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder, self.stop, self.peak = folder, threading.Event(), {}

    def run(self):
        while not self.stop.wait(0.1):
            rows = [r for p in self.folder.iterdir() if (r := _rollup(int(p.name)))]
            if not rows:
                continue
            now = {
                "footprint": sum(r["uss"] for r in rows) + max(r["shared"] for r in rows),
                "uss": sum(r["uss"] for r in rows),
                "pss": sum(r["pss"] for r in rows),
                "rss": sum(r["rss"] for r in rows),
                "processes": len(rows),
            }
            for k, v in now.items():
                self.peak[k] = max(self.peak.get(k, 0), v)

    def result(self) -> dict:
        self.stop.set()
        self.join()
        return {k: (v if k == "processes" else v / 1024) for k, v in self.peak.items()}


# name: (trials, where the base comes from, train.activation_checkpointing). "store": the
# object store, linear weights in the format the trials compute in (as a sweep shares them);
# "store_fp32": the object store, all fp32 (as sweeps did before 2026-12-01); "disk": each
# trial loads the saved model.
MEMORY_RUNS = {
    "one": (1, "store", False),
    "two": (2, "store", False),
    "one_fp32_store": (1, "store_fp32", False),
    "two_fp32_store": (2, "store_fp32", False),
    "two_disk": (2, "disk", False),
    "one_checkpointed": (1, "store", True),
    "two_checkpointed": (2, "store", True),
}


def memory(
    model: str, path: str, data: dict, repeats: int, steps: int, batch: int, names: list[str]
) -> dict:
    import ray
    from ray import tune as ray_tune

    from trainables.models import base_weights
    from trainables.precision import resolve_precision

    settings = _settings(path, model, steps=steps, batch=batch, threads=1)
    checkpointed = _settings(path, model, steps=steps, batch=batch, threads=1, checkpointing=True)
    runs = {name: MEMORY_RUNS[name] for name in names}
    compute = resolve_precision(settings.train.precision, cuda=False)  # as a sweep stores it
    shared = {
        "settings": ray.put(settings),
        "checkpointed": ray.put(checkpointed),
        "data": ray.put(data),
    }
    weights_mib = {}
    # Each format in the store only if a run reads it: a large base fills the store.
    for key, fmt, source in (("weights", compute, "store"), ("weights_fp32", "fp32", "store_fp32")):
        if any(base == source for _, base, _ in runs.values()):
            weights = base_weights(path, compute=fmt)
            shared[key] = ray.put(weights)
            weights_mib[source] = weights.nbytes / 2**20
            del weights  # the store holds them; this process need not
        else:
            shared[key] = None
    peaks: dict[str, list[dict]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, (trials, base, checkpointing) in runs.items():  # alternating
            with tempfile.TemporaryDirectory() as pids:
                sampler = _Sampler(Path(pids))
                sampler.start()
                try:
                    _run_tuner(
                        ray_tune.with_parameters(_memory_trial, pids=pids, **shared),
                        {
                            **LORA,
                            "base": base,
                            "checkpointing": checkpointing,
                            "seed": ray_tune.grid_search(list(range(trials))),
                        },
                        cpus=1,
                        concurrent=2,
                    )
                finally:
                    peaks[name].append(sampler.result())
    out: dict = {
        "weights_mib": weights_mib,
        "store_format": compute,
        "steps": steps,
        "batch": batch,
    }
    for name in runs:
        out[name] = {k: _spread([p.get(k, 0) for p in peaks[name]]) for k in peaks[name][0]}
    foot = {k: [p["footprint"] for p in v] for k, v in peaks.items()}
    pairs = {
        "two_vs_one": ("two", "one"),
        "two_disk_vs_one": ("two_disk", "one"),
        "two_vs_one_fp32_store": ("two_fp32_store", "one_fp32_store"),
        "one_vs_one_fp32_store": ("one", "one_fp32_store"),
        "two_vs_two_fp32_store": ("two", "two_fp32_store"),
        "two_vs_one_checkpointed": ("two_checkpointed", "one_checkpointed"),
        "one_checkpointed_vs_one": ("one_checkpointed", "one"),
    }
    for key, (a, b) in pairs.items():
        if a in foot and b in foot:
            out[key] = _ratios(foot[a], foot[b])
    return out


# -- 6: levers -------------------------------------------------------------------------------


def padding_share(data: list[dict], batch: int, seeds: int = 20) -> dict:
    """Share of padded positions per batch: random order (Trainer's default sampler) against
    HF's length-grouped sampler (`group_by_length`)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = [len(e["input_ids"]) for e in data]

    def share(order: list[int]) -> float:
        real = padded = 0
        for i in range(0, len(order), batch):
            chunk = [lengths[j] for j in order[i : i + batch]]
            real, padded = real + sum(chunk), padded + max(chunk) * len(chunk)
        return 1 - real / padded

    rand, grouped = [], []
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        rand.append(share(torch.randperm(len(lengths), generator=g).tolist()))
        grouped.append(
            share(list(LengthGroupedSampler(batch, lengths=lengths, generator=g).__iter__()))
        )
    return {"batch": batch, "random": _spread(rand), "length_grouped": _spread(grouped)}


def _lora_model(path: str):
    """The levers' model: the base from disk with LoRA r=8 on q and v (no dropout)."""
    from peft import LoraConfig, get_peft_model

    from trainables.models import load_model

    return get_peft_model(
        load_model(path),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )


def answer_logits(path: str, data: list[dict], batch: int, threads: int, repeats: int) -> dict:
    """One LoRA training step (forward + backward) with the loss from logits at every position
    (what the model's own loss does) against logits only where a label is scored."""
    from trainables.loss import answer_token_loss
    from trainables.prompts import collate

    torch.set_num_threads(threads)
    model = _lora_model(path)
    model.train()
    b = collate(data[:batch], 0)
    scored = b["labels"][:, 1:] != -100

    def full():
        return model(**b).loss

    def answers_only():  # what medtune's trainer and evaluation compute
        return answer_token_loss(model, b)

    assert torch.allclose(full(), answers_only(), rtol=1e-4)  # the same loss
    times: dict[str, list[float]] = {"full": [], "answers_only": []}
    for i in range(repeats + 1):
        for name, fn in (("full", full), ("answers_only", answers_only)):
            start = time.perf_counter()
            fn().backward()
            model.zero_grad(set_to_none=True)
            if i:  # the first round is warm-up
                times[name].append(time.perf_counter() - start)
    positions = int(b["attention_mask"][:, 1:].sum())
    return {
        "batch": batch,
        "seq_len": b["input_ids"].shape[1],
        "scored_share": int(scored.sum()) / positions,
        "step_s": {k: _spread(v) for k, v in times.items()},
        "full_vs_answers_only": _ratios(times["full"], times["answers_only"]),
    }


def checkpointing_cost(path: str, data: list[dict], batch: int, threads: int, repeats: int):
    """One LoRA training step (forward + backward, answer-token loss, in the precision a trial
    resolves to here) with and without activation checkpointing, alternating."""
    from trainables.loss import answer_token_loss
    from trainables.precision import autocast, resolve_precision
    from trainables.prompts import collate

    torch.set_num_threads(threads)
    model = _lora_model(path)
    model.train()
    base = model.get_base_model()
    precision = resolve_precision("auto", cuda=False)
    b = collate(data[:batch], 0)
    times: dict[str, list[float]] = {"plain": [], "checkpointed": []}
    for i in range(repeats + 1):
        for name in times:
            if name == "checkpointed":
                base.activation_checkpointing_enable({"use_reentrant": False})
            else:
                base.activation_checkpointing_disable()
            start = time.perf_counter()
            with autocast(precision, "cpu"):
                loss = answer_token_loss(model, b)
            loss.backward()
            model.zero_grad(set_to_none=True)
            if i:  # the first round is warm-up
                times[name].append(time.perf_counter() - start)
    return {
        "batch": batch,
        "seq_len": b["input_ids"].shape[1],
        "precision": precision,
        "step_s": {k: _spread(v) for k, v in times.items()},
        "checkpointed_vs_plain": _ratios(times["checkpointed"], times["plain"]),
    }


def _logits_peak(path: str, data: list[dict], batch: int, threads: int, answers_only: bool):
    """Peak resident memory (VmHWM, MiB) of a fresh process that loads the LoRA model and runs
    one forward + backward with full or answer-only logits; run in a spawned child."""
    from trainables.loss import answer_token_loss
    from trainables.prompts import collate

    torch.set_num_threads(threads)
    model = _lora_model(path)
    model.train()
    b = collate(data[:batch], 0)
    loss = answer_token_loss(model, b) if answers_only else model(**b).loss
    loss.backward()
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def logits_memory(path: str, data: list[dict], batch: int, threads: int, repeats: int) -> dict:
    """Peak memory of one training step with full vs answer-only logits, each in a fresh
    process (alternating), on the longest examples (the worst batch a trial meets)."""
    import multiprocessing

    longest = sorted(data, key=lambda e: -len(e["input_ids"]))[:batch]
    peaks: dict[str, list[float]] = {"full": [], "answers_only": []}
    ctx = multiprocessing.get_context("spawn")
    for _ in range(repeats):
        for name in peaks:
            with ctx.Pool(1) as pool:
                args = (path, longest, batch, threads, name == "answers_only")
                peaks[name].append(pool.apply(_logits_peak, args))
    return {
        "seq_len": max(len(e["input_ids"]) for e in longest),
        "peak_mib": {k: _spread(v) for k, v in peaks.items()},
        "full_minus_answers_only_mib": _spread(
            [a - b for a, b in zip(peaks["full"], peaks["answers_only"], strict=True)]
        ),
    }


def _spread(values: list[float]) -> dict:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "values": values,
    }


def _ratios(a: list[float], b: list[float]) -> dict:
    """Ratios of paired repeats (a[i] / b[i], measured next to each other)."""
    return _spread([x / y for x, y in zip(a, b, strict=True)])


PARTS = ("trial", "startup", "memory", "levers", "logits_memory")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3, help="of every part")
    parser.add_argument("--mem-steps", type=int, default=2, help="training steps per memory run")
    parser.add_argument("--mem-batch", type=int, default=4, help="batch of start-up/memory/levers")
    parser.add_argument(
        "--mem-runs",
        default=",".join(MEMORY_RUNS),
        help="comma-separated runs of the memory part (fewer for bases that fill the machine)",
    )
    parser.add_argument(
        "--precisions",
        default="fp32,auto",
        help="part 1's number formats, comma-separated: fp32, auto (what the trial picks here)",
    )
    parser.add_argument("--skip", default="", help=f"comma-separated parts of {PARTS} to skip")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON")
    args = parser.parse_args()
    skip = {p for p in args.skip.split(",") if p}
    if skip - set(PARTS):
        parser.error(f"--skip: unknown parts {sorted(skip - set(PARTS))}; choose from {PARTS}")
    mem_runs = [r for r in args.mem_runs.split(",") if r]
    if not mem_runs or set(mem_runs) - set(MEMORY_RUNS):
        parser.error(f"--mem-runs: got {args.mem_runs!r}; choose from {', '.join(MEMORY_RUNS)}")
    if not args.precisions or set(args.precisions.split(",")) - {"fp32", "auto"}:
        parser.error(f"--precisions: got {args.precisions!r}; choose from fp32, auto")

    from trainables.config import ModelConfig
    from trainables.models import load_model, prepare_model

    path = prepare_model(ModelConfig(name=args.model))
    base = load_model(path)
    params, vocab = sum(p.numel() for p in base.parameters()), base.config.vocab_size
    del base
    out = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "processor": _cpu_name(),
            "cores": os.cpu_count(),
            "threads_used": args.threads,
            "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(),
            **{p: _version(p) for p in ("torch", "transformers", "peft", "ray")},
        },
        "model": args.model,
        "parameters": params,
        "batch": args.batch,
        "seq_len": args.seq,
        "repeats": args.repeats,
    }
    if "trial" not in skip:
        out["trial"] = trial_efficiency(path, params, vocab, args)
    data = demo_data(path)
    if {"startup", "memory"} - skip:
        import ray

        from tune.cluster import init_local_ray, use_trial_worker_settings

        use_trial_worker_settings()  # the trials' processes as `medtune sweep` starts them
        init_local_ray(
            num_cpus=max(2, args.threads),
            include_dashboard=False,
            log_to_driver=False,
        )
        try:
            if "startup" not in skip:
                out["startup_s"] = startup(args.model, path, data, args.repeats, args.threads)
            if "memory" not in skip:
                out["memory_mib"] = memory(
                    args.model, path, data, args.repeats, args.mem_steps, args.mem_batch, mem_runs
                )
        finally:
            ray.shutdown()
    if "levers" not in skip:
        out["levers"] = {
            "padding_share": padding_share(data["train"], args.mem_batch),
            "answer_logits": answer_logits(
                path, data["train"], args.mem_batch, args.threads, args.repeats
            ),
            "activation_checkpointing": checkpointing_cost(
                path, data["train"], args.mem_batch, args.threads, args.repeats
            ),
        }
    if "logits_memory" not in skip:
        out.setdefault("levers", {})["answer_logits_memory"] = logits_memory(
            path, data["train"], args.mem_batch, args.threads, args.repeats
        )
    out["machine"]["load_average_at_end"] = os.getloadavg()
    name = f"{datetime.now():%Y%m%d-%H%M%S}-{Path(args.model).name}.json"  # a folder too
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / name).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


def _version(package: str) -> str | None:
    from importlib.metadata import version

    try:
        return version(package)
    except Exception:
        return None


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    # One run of this script (2026-11-29, 09:30) died of SIGSEGV at interpreter exit, after
    # its JSON was written; a crash like that now prints every thread's Python stack.
    faulthandler.enable()
    if sys.argv[1:2] == ["_side"]:  # one side of part 1, run by _side_in_subprocess
        _run_side(json.loads(sys.argv[2]))
    else:
        main()
