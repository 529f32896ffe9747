"""The Ray a sweep starts on this machine runs its trials at normal priority."""

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
