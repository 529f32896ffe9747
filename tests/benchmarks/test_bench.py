"""`make bench` at its smallest size: it runs and produces its numbers (no timing asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


@pytest.mark.slow
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
    for key in ("ceiling_tokens_per_s", "bare_lora_tokens_per_s", "medtune_trial_tokens_per_s"):
        assert data[key] > 0
    assert all(g > 0 for g in data["matmul_gflops"])
    assert data["machine"]["cores"] >= 1
