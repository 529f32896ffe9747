"""The Ray a sweep starts on this machine runs its trials at normal priority."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

_PROBE = """
import os, ray
from tune.sweep import use_normal_priority_workers
{setup}
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
print(ray.get(ray.remote(lambda: os.nice(0)).remote()))
"""


def _worker_niceness(setup: str) -> int:
    env = {k: v for k, v in __import__("os").environ.items() if k != "RAY_worker_niceness"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(setup=setup)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    return int(out.stdout.strip().splitlines()[-1])


def test_trials_run_at_niceness_zero_not_rays_fifteen():
    assert _worker_niceness("") == 15  # Ray's own default, which the sweep changes
    assert _worker_niceness("use_normal_priority_workers()") == 0
