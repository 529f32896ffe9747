"""A multi-node Ray cluster on one machine: trials spread over nodes and survive a lost node."""

import threading
import time

import pytest
import ray
from ray.cluster_utils import Cluster
from rich.console import Console

from tests.conftest import read_progress
from tune.cluster import use_trial_worker_settings
from tune.config import load_config
from tune.sweep import prepare_sweep, run_sweep

pytestmark = pytest.mark.slow
# Two trials, one per worker node: the fewest that use both nodes at once (each trial a fresh
# process, as `run.reuse_actors=false` places them; 4 trials took 57-163 s of the suite).
STEPS, SAMPLES = 60, 2


@pytest.fixture
def cluster():
    ray.shutdown()  # this test drives its own cluster, not the session's local Ray
    # Nodes started with the settings docs/cluster.md gives `ray start` (trials at niceness
    # 0, on jemalloc, no idle workers), as tests/conftest.py's local Ray.
    use_trial_worker_settings()
    # No Ray dashboard (about 3 CPU-s of a start): nothing here reads it.
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1, resources={"trainer": 1}) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()


def _progress(out):
    return [read_progress(p) for p in out.glob("trial_*/progress.csv") if p.stat().st_size]


def test_trials_spread_over_nodes_and_survive_a_lost_node(cluster, tmp_path, model_cache):
    c, workers = cluster
    doomed = workers[1].node_id
    cfg = load_config(
        None,
        [
            "model.name=tiny-random",
            "data.max_records=120",
            "scheduler.name=fifo",
            f"search.num_samples={SAMPLES}",
            f"train.max_steps={STEPS}",
            "train.eval_every=10",
            "train.per_device_batch_size=8",
            "run.reuse_actors=false",  # a fresh actor per trial, placed wherever Ray has room
            "run.max_failures=3",
            "run.name=cluster",
            f"run.storage={tmp_path}",
            f"ray.address={c.address}",
            "resources.custom={trainer: 1}",
        ],
    )
    prep = prepare_sweep(cfg, Console(quiet=True))
    out = tmp_path / "cluster"
    removed = threading.Event()

    def remove_when_busy():
        deadline = time.time() + 300
        while time.time() < deadline:
            for df in _progress(out):
                if "node_id" in df and (df["node_id"] == doomed).any() and df["step"].max() < STEPS:
                    c.remove_node(workers[1])
                    removed.set()
                    return
            time.sleep(0.2)

    killer = threading.Thread(target=remove_when_busy, daemon=True)
    killer.start()
    summary = run_sweep(prep, Console(quiet=True))
    killer.join(timeout=5)

    assert removed.is_set(), "no trial ran on the second worker node"
    assert len(summary["trials"]) == SAMPLES and summary["errored"] == 0
    assert all(t["last_step"] == STEPS for t in summary["trials"])
    frames = _progress(out)
    assert len({n for df in frames for n in df["node_id"]}) >= 2  # trials used both nodes
    moved = [df for df in frames if (df["node_id"] == doomed).any() and df["node_id"].nunique() > 1]
    assert moved, "no trial moved off the removed node"
    for df in moved:
        steps = list(df["step"])
        # Continued from its last checkpoint: the step count never restarts at zero.
        assert steps == sorted(set(steps)), steps
        first_elsewhere = df.loc[df["node_id"] != doomed, "step"].iloc[0]
        assert first_elsewhere > 10
