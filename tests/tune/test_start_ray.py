"""The Ray a sweep starts on this machine: trials at normal priority, started together."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

_PROBE = """
import os, ray
{start}
print(ray.get(ray.remote(lambda: os.nice(0)).remote()))
"""
# Ray's own default, for contrast: the same local start without medtune's start_ray.
_BARE = 'ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)'
_SWEEP = (
    "from tune.config import load_config\n"
    "from tune.sweep import start_ray\n"
    'start_ray(load_config(None, ["ray.dashboard=false"]))'
)


def _worker_niceness(start: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(start=start)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_trials_run_at_niceness_zero_not_rays_fifteen():
    assert _worker_niceness(_BARE) == 15
    assert _worker_niceness(_SWEEP) == 0


def test_as_many_trials_start_together_as_the_cluster_holds(ray_2_cpus, monkeypatch):
    """With a searcher, Tune keeps one trial pending at a time unless told otherwise, so a
    sweep's first trials started one after another (each after the last one's process had
    imported torch and transformers). Checked against Tune's own reading of the setting."""
    from ray.tune.execution.tune_controller import _get_max_pending_trials
    from ray.tune.search import SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    from tune import sweep
    from tune.config import load_config

    monkeypatch.setenv("TUNE_MAX_PENDING_TRIALS_PG", "unset")  # restored after the test
    monkeypatch.delenv("TUNE_MAX_PENDING_TRIALS_PG")
    searcher = SearchGenerator(OptunaSearch(metric="eval_loss", mode="min"))
    assert _get_max_pending_trials(searcher) == 1  # Ray's default: the problem

    # The session's Ray has 2 CPUs and no GPU; the default sweep has 6 trials of 1 CPU.
    cases = {
        (): 2,
        ("resources.cpus_per_trial=0.5",): 4,
        ("resources.cpus_per_trial=0.5", "search.num_samples=3"): 3,
        ("resources.cpus_per_trial=2",): 1,
        ("resources.max_concurrent_trials=1",): 1,
        ("resources.gpus_per_trial=1",): 1,  # none fits now: Ray's default, for autoscaling
    }
    for overrides, expected in cases.items():
        assert sweep.start_trials_together(load_config(None, list(overrides))) == expected
        assert _get_max_pending_trials(searcher) == expected, overrides

    monkeypatch.setattr(sweep, "_USER_PENDING", "3")  # exported before medtune started
    assert sweep.start_trials_together(load_config(None, [])) == 3
