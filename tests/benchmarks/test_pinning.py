"""benchmarks/pinning.py at its smallest size: it runs and produces its numbers (no timing
asserted), and the pinned trials did train on the cores they were given."""

import json
import os

import pytest

from tests.conftest import load_benchmark


@pytest.mark.bench
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning two trials needs 2 cores")
def test_pinning_benchmark_produces_its_numbers(tmp_path, model_cache, ray_2_cpus):
    out = load_benchmark("pinning.py").main(
        [
            "--model=tiny-random",
            "--precision=fp32",
            "--rounds=1",
            "--batch=2",
            "--seq=16",
            "--steps=4",
            f"--out={tmp_path}",
        ]
    )
    (written,) = tmp_path.glob("*-pinning-tiny-random.json")
    assert json.loads(written.read_text()) == out
    (a,), (b,) = out["core_sets"]  # two trials (the suite's Ray has 2 CPUs), one core each
    assert out["trials_at_once"] == 2 and a != b
    for mode in ("pinned", "unpinned"):
        (run,) = out["runs"][mode]
        assert len(run["tokens_per_s"]) == 2 and all(t > 0 for t in run["tokens_per_s"])
        assert run["wall_s"] > 0
    assert out["pinned_vs_unpinned"]["median"] > 0


def test_a_pinned_trial_trains_on_its_cores(monkeypatch):
    """The pinning reaches the thread that trains (run here in this process, on one core)."""
    import trainables.trainable

    module = load_benchmark("pinning.py")
    seen = {}

    def fake_train(config, **kwargs):  # stands in for the trainable, not for the pinning
        seen["cores"] = os.sched_getaffinity(0)
        seen["config"] = config

    before = os.sched_getaffinity(0)
    monkeypatch.setattr(trainables.trainable, "train_lora", fake_train)
    try:
        module._pinned_trial({"cores": [min(before)], "learning_rate": 1e-4})
    finally:
        os.sched_setaffinity(0, before)
    assert seen == {"cores": {min(before)}, "config": {"learning_rate": 1e-4}}
