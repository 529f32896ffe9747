"""The Ray a sweep starts on this machine runs its trials at normal priority, on the jemalloc
Ray ships with medtune's settings, and starts no worker processes ahead of them."""

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

found = ray.get(worker.remote())
# Worker processes started for no job (Ray names each log worker-<id>-<job>-<pid>.out): the
# ones Ray starts ahead of any work, as the driver connects, before the task above ran.
logs = os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs")
found["jobless"] = sum(f.startswith("worker-") and "-ffffffff-" in f for f in os.listdir(logs))
print(json.dumps(found))
"""
# Ray's own default, for contrast: the same local start without medtune's start_ray.
_BARE = 'ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)'
_SWEEP = (
    "from tune.config import load_config\n"
    "from tune.cluster import start_ray\n"
    'start_ray(load_config(None, ["ray.dashboard=false"]))'
)
_OURS = (
    "RAY_worker_niceness",
    "RAY_LD_PRELOAD_ON_WORKERS",
    "MALLOC_CONF",
    "LD_PRELOAD",
    "RAY_prestart_worker_first_driver",
)


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
    assert bare["jobless"] >= 1
    assert sweep["jobless"] == 0
