"""`make bench`: how fast one medtune trial trains, against the machine's limits.

    python benchmarks/bench.py [--model smollm2-135m] [--batch 8] [--seq 256] [--steps 9]

Measures in one process run, on the same model, batch, sequence length and threads:
  1. the fp32 matmul peak of this machine through torch (GFLOP/s);
  2. a bare PyTorch LoRA loop (PEFT LoRA r=8 on q/v, AdamW, frozen base): tokens/s;
  3. one medtune trial (the real `train_lora` inside a one-trial Ray Tune run): tokens/s.
The matmul-bound ceiling is peak / (4 x parameters) tokens/s: forward (2 FLOP per weight) and
the input-gradient backward (2 more); LoRA's weight gradients are negligible. Results go to
benchmarks/results/<date>-<model>.json; BENCHMARKS.md quotes them with the machine.
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

import torch

HERE = Path(__file__).resolve().parent


def matmul_gflops(threads: int, n: int = 2048, reps: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
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


def bare_loop(model_path: str, examples: list[dict], batch: int, threads: int) -> float:
    from peft import LoraConfig, get_peft_model

    from trainables.models import load_model
    from trainables.prompts import collate

    torch.set_num_threads(threads)
    model = get_peft_model(
        load_model(model_path),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = [collate(examples[i : i + batch], 0) for i in range(0, len(examples), batch)]
    warmup = 2
    for i, b in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[warmup:])
    return tokens / (time.perf_counter() - start)


def medtune_trial(model_path: str, examples: list[dict], batch: int, threads: int) -> float:
    import ray
    from ray import tune as ray_tune

    from trainables.config import ModelConfig, TrainConfig
    from trainables.trainable import TrialSettings, train_lora

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
        ),
        pad_token_id=0,
        cpus=threads,
    )
    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tuner = ray_tune.Tuner(
                ray_tune.with_resources(
                    ray_tune.with_parameters(
                        train_lora,
                        settings=settings,
                        data={"train": examples, "validation": examples[:1]},
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON")
    args = parser.parse_args()

    from trainables.config import ModelConfig
    from trainables.models import load_model, prepare_model

    path = prepare_model(ModelConfig(name=args.model))
    base = load_model(path)
    params, vocab = sum(p.numel() for p in base.parameters()), base.config.vocab_size
    del base
    examples = synthetic_examples(vocab, args.batch, args.seq, args.steps)

    peak = matmul_gflops(args.threads)
    ceiling = peak * 1e9 / (4 * params)
    bare = bare_loop(path, examples, args.batch, args.threads)
    trial = medtune_trial(path, examples, args.batch, args.threads)
    peak_after = matmul_gflops(args.threads)
    out = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "processor": _cpu_name(),
            "cores": os.cpu_count(),
            "threads_used": args.threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "model": args.model,
        "parameters": params,
        "batch": args.batch,
        "seq_len": args.seq,
        "matmul_gflops": [peak, peak_after],
        "ceiling_tokens_per_s": ceiling,
        "bare_lora_tokens_per_s": bare,
        "medtune_trial_tokens_per_s": trial,
        "trial_vs_bare": trial / bare,
        "trial_vs_ceiling": trial / ceiling,
    }
    name = f"{datetime.now():%Y%m%d-%H%M%S}-{args.model}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / name).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
