"""benchmarks/reuse_memory.py at its smallest size: both sides (medtune as shipped, and without
its memory release) run the real CLI and produce their numbers (no timing or size asserted).

2 trials of 2 CPUs: one slot on this suite's 2-CPU machines, so one trial process runs both in
turn (one process per side: each costs ~10 CPU-s of imports)."""

import json
import math

import pytest

from tests.conftest import load_benchmark


@pytest.mark.bench
def test_reuse_memory_benchmark_produces_its_numbers(tmp_path, model_cache):
    out = load_benchmark("reuse_memory.py").main(
        [
            "--model=tiny-random",
            "--trials=2",
            "--steps=2",
            "--repeats=1",
            "--cpus-per-trial=2",
            f"--out={tmp_path}",
        ]
    )
    (written,) = tmp_path.glob("*-reuse-memory-tiny-random.json")
    assert json.loads(written.read_text()) == out
    assert [r["side"] for r in out["runs"]] == ["trim", "no_trim"]
    for run in out["runs"]:
        # The sweep's own trial process only: one slot, one process for both trials.
        (process,) = run["processes"]
        assert 0 < process["first_mib"] <= process["peak_mib"] == run["peak_uss_mib"]
        assert process["last_mib"] <= process["peak_mib"]
        assert math.isfinite(run["growth_per_trial_mib"]) and run["wall_s"] > 0
    for side in ("trim", "no_trim"):
        assert out["summary"][side]["peak_uss_mib"]["min"] > 0
