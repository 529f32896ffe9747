"""`make bench` at its smallest size: it runs and produces its numbers (no timing asserted).

Start-up and memory each start fresh Ray trial processes (most of a minute even for the tiny
model), so the smoke run skips them; their memory sampler is checked here on a live process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_benchmark
from tune.cluster import ray_jemalloc

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


@pytest.mark.bench
def test_bench_smoke(tmp_path, model_cache):
    args = [
        "--model",
        "tiny-random",
        "--batch",
        "2",
        "--seq",
        "32",
        "--steps",
        "6",
        "--repeats",
        "1",
        "--skip",
        "startup,memory,logits_memory",
        # fp32 only: the bf16 side is the same code under autocast (which the levers run in
        # the format auto picks), and 3 more fresh processes.
        "--precisions",
        "fp32",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    trial = data["trial"]
    assert "fp32" in trial  # and bf16 where train.precision=auto picks it (AMX, AVX512_BF16 CPUs)
    for precision in set(trial) - {"auto_vs_fp32_trial"}:
        part = trial[precision]
        for key in ("ceiling_tokens_per_s", "bare_lora_tokens_per_s", "medtune_trial_tokens_per_s"):
            assert part[key] > 0
        assert all(g > 0 for g in part["matmul_gflops"])
        assert part["trial_vs_bare"]["median"] > 0
        if ray_jemalloc():
            assert part["trial_vs_bare_jemalloc"]["median"] > 0
            assert len(part["bare_lora_jemalloc_runs"]["values"]) == 1
    assert data["machine"]["cores"] >= 1 and data["machine"]["transformers"]
    levers = data["levers"]
    assert 0 < levers["answer_logits"]["scored_share"] < 1  # the prompt is not scored
    assert all(t > 0 for t in levers["answer_logits"]["step_s"]["full"]["values"])
    ac = levers["activation_checkpointing"]
    for side in ("plain", "checkpointed"):
        assert all(t > 0 for t in ac["step_s"][side]["values"])
    pad = levers["padding_share"]
    assert 0 <= pad["length_grouped"]["median"] < pad["random"]["median"] < 1


def test_memory_sampler_reads_a_live_process(tmp_path):
    bench = load_benchmark("bench.py")
    me = bench._rollup(os.getpid())
    assert 0 < me["uss"] <= me["pss"] <= me["rss"] and me["shared"] == me["rss"] - me["uss"]
    # A child process holding 64 MiB of touched private pages: this process's own memory
    # moves with whatever earlier tests left behind, a fresh child's does not.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096]); "
            "print(flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        child.stdout.readline()  # the ballast is touched
        (tmp_path / str(child.pid)).touch()
        sampler = bench._Sampler(tmp_path)
        sampler.start()
        sampler.stop.wait(0.35)
        peak = sampler.result()
    finally:
        child.kill()
        child.wait()
    assert peak["processes"] == 1
    assert peak["uss"] >= 64  # MiB: the ballast is counted as private
    assert peak["footprint"] == pytest.approx(peak["rss"], rel=0.01)  # one process: USS + shared


def test_shaped_models_have_the_published_sizes():
    """The larger SmolLM2 shapes `benchmarks/shaped_model.py` builds for memory measurements
    hold as many parameters as the published SmolLM2-360M and -1.7B (built on the meta device,
    so no weights are allocated)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    shaped = load_benchmark("shaped_model.py")
    # What the 135M's config shares with the family: vocabulary and tied embeddings.
    base = LlamaConfig(vocab_size=49152, tie_word_embeddings=True)
    counts = {}
    for size in ("360m", "1.7b"):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(shaped.shaped_config(size, base))
        counts[size] = sum(p.numel() for p in model.parameters())
    assert counts == {"360m": 361_821_120, "1.7b": 1_711_376_384}
    assert base.hidden_size == LlamaConfig().hidden_size  # the base is left as it was
