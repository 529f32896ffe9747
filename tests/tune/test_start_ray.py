"""The Ray a sweep starts on this machine runs its trials at normal priority, on the jemalloc
Ray ships with medtune's settings."""

import json
import os
import subprocess
import sys

import pytest

from tune.cluster import JEMALLOC_CONF, ray_jemalloc

pytestmark = pytest.mark.slow

_PROBE = """
import json, os, ray
{start}

@ray.remote
def worker():
    maps = open("/proc/self/maps").read()
    return {{"nice": os.nice(0), "jemalloc": "libjemalloc" in maps,
             "conf": os.environ.get("MALLOC_CONF")}}

print(json.dumps(ray.get(worker.remote())))
"""
# Ray's own default, for contrast: the same local start without medtune's start_ray.
_BARE = 'ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)'
_SWEEP = (
    "from tune.config import load_config\n"
    "from tune.cluster import start_ray\n"
    'start_ray(load_config(None, ["ray.dashboard=false"]))'
)
_OURS = ("RAY_worker_niceness", "RAY_LD_PRELOAD_ON_WORKERS", "MALLOC_CONF", "LD_PRELOAD")


def _worker(start: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(start=start)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_trials_run_at_niceness_zero_on_jemalloc_not_rays_defaults():
    bare, sweep = _worker(_BARE), _worker(_SWEEP)
    assert bare["nice"] == 15
    assert sweep["nice"] == 0
    assert not bare["jemalloc"] and bare["conf"] is None
    if ray_jemalloc():
        assert sweep["jemalloc"]
    assert sweep["conf"] == JEMALLOC_CONF
