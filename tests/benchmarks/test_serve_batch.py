"""benchmarks/serve_batch.py at its smallest size (tiny-random, 2 questions, 4 tokens): it runs
and writes its numbers. No timing is asserted."""

import json

import pytest

from tests.conftest import load_benchmark


@pytest.mark.bench
def test_serve_batch_benchmark_produces_its_numbers(tmp_path, model_cache):
    args = ["--model=tiny-random", "--questions=2", "--tokens=4", "--repeats=2"]
    out = load_benchmark("serve_batch.py").main([*args, f"--out={tmp_path}"])
    (written,) = tmp_path.glob("*-serve-batch-tiny-random.json")
    assert json.loads(written.read_text()) == out
    assert [r["first"] for r in out["runs"]] == ["one_by_one", "batched"]  # alternating
    for run in out["runs"]:
        # A random model never says its end-of-sequence token: every answer runs to 4 tokens.
        assert run["one_by_one"]["tokens"] == run["batched"]["tokens"] == 2 * 4
        assert run["streamed"]["tokens"] == 2 * 4 and run["streamed_same_answers"]
        assert run["batched_over_one_by_one"] > 0 and 0 <= run["same_answers"] <= 2
        assert 0 < run["streamed_first_token_seconds"] < run["streamed"]["seconds"]
        assert run["streamed_over_batched"] > 0
    spread = out["batched_over_one_by_one"]
    assert 0 < spread["min"] <= spread["median"] <= spread["max"]
    assert out["machine"]["cores"] >= 1 and out["machine"]["torch"]
