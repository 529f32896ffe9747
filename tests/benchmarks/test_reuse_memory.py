"""benchmarks/reuse_memory.py at its smallest size: both sides (medtune as shipped, and without
its memory release) run the real CLI and produce their numbers (no timing or size asserted).

3 trials on 2 slots of one CPU, so one trial process runs two trials in turn."""

import json
import math

import pytest

from tests.conftest import load_benchmark


@pytest.mark.bench
def test_reuse_memory_benchmark_produces_its_numbers(tmp_path, model_cache):
    out = load_benchmark("reuse_memory.py").main(
        ["--model=tiny-random", "--trials=3", "--steps=2", "--repeats=1", f"--out={tmp_path}"]
    )
    (written,) = tmp_path.glob("*-reuse-memory-tiny-random.json")
    assert json.loads(written.read_text()) == out
    assert [r["side"] for r in out["runs"]] == ["trim", "no_trim"]
    for run in out["runs"]:
        # The sweep's own trial processes only: 2 slots, at most 2 processes for 3 trials.
        assert 1 <= len(run["processes"]) <= 2, run
        for process in run["processes"]:
            assert 0 < process["first_mib"] <= process["peak_mib"]
            assert process["last_mib"] <= process["peak_mib"]
        assert run["peak_uss_mib"] == max(p["peak_mib"] for p in run["processes"])
        assert math.isfinite(run["growth_per_trial_mib"]) and run["wall_s"] > 0
    for side in ("trim", "no_trim"):
        assert out["summary"][side]["peak_uss_mib"]["min"] > 0
