"""benchmarks/peer.py and asha.py at their smallest size: they run and produce their numbers.

One process run of three sides (the peer's `Trainer.hyperparameter_search`, medtune with ASHA
and with FIFO) on tiny-random, 2 trials of 4 steps, all joining the session's one Ray instead of
starting three. The other medtune sides run the same `medtune sweep` with a few more overrides:
those are checked against medtune's config here rather than run (each run is ~20 s of the
suite). No timing is asserted.
"""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_benchmark

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.bench
def test_peer_and_asha_benchmarks_produce_their_numbers(tmp_path, model_cache, ray_2_cpus):
    import ray

    out = load_benchmark("peer.py").main(
        [
            "--model=tiny-random",
            "--trials=2",
            "--steps=4",
            "--eval-every=2",
            "--val-examples=4",
            "--max-records=40",
            "--repeats=1",
            "--seed=3",
            "--vary-seed",  # repeat 0 searches with seed 3 on every side, the peer's too
            "--sides=peer,asha,fifo",
            f"--ray-address={ray.get_runtime_context().gcs_address}",
            f"--out={tmp_path}",
        ]
    )
    (written,) = tmp_path.glob("*-peer-tiny-random.json")
    assert written.is_file()
    assert out["complete"] and out["machine"]["cores"] >= 1
    assert {r["side"] for r in out["runs"]} == {"peer", "asha", "fifo"}
    assert {r["seed"] for r in out["runs"]} == {3}
    for run in out["runs"]:
        for key in ("wall_s", "best_val_loss", "test_loss", "peak_pss_bytes", "peak_rss_bytes"):
            assert math.isfinite(run[key]) and run[key] > 0, (run["side"], key, run[key])
        assert run["disk_checkpoint_bytes"] > 0
        assert 0 < run["steps_trained"] <= 2 * 4
        assert len(run["trials"]) == 2
        if not run["side"].startswith("peer"):  # when each trial started, from its reports
            assert len(run["trial_starts_s"]) == 2
            assert 0 < run["trial_starts_s"][0] <= run["trial_starts_s"][1] < run["wall_s"]
    summary = out["summary"]
    for pair in ("peer_vs_medtune", "fifo_vs_asha"):
        for key in ("wall_time", "steps", "peak_pss", "best_val_loss_gain"):
            assert all(math.isfinite(v) for v in summary[pair][key]["per_repeat"]), (pair, key)
    assert summary["fifo_vs_asha"]["steps"]["min"] >= 1  # FIFO never trains fewer steps


def test_every_medtune_side_is_a_valid_sweep_config():
    from tune.config import load_config

    peer = load_benchmark("peer.py")
    args = peer.build_parser().parse_args(["--trials=2", "--steps=4", "--eval-every=2"])
    medtune_sides = [s for s in peer.SIDES if not s.startswith("peer")]
    for side in medtune_sides:
        cfg = load_config(overrides=peer.medtune_overrides(args, 0) + peer.side_overrides(side))
        assert cfg.search.num_samples == 2 and cfg.train.max_steps == 4, side
        assert cfg.scheduler.name == ("fifo" if side == "fifo" else "asha"), side
    sides = {s: load_config(overrides=peer.side_overrides(s)) for s in medtune_sides}
    assert sides["noreuse"].run.reuse_actors is False
    assert sides["random_start"].search.startup == "random"
    assert sides["ray_asha"].scheduler.wait_to_compare is False
    assert sides["asha"].scheduler.wait_to_compare is True


def test_asha_entry_point_parses():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "asha.py"), "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "--sides" in proc.stdout
