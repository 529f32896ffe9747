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


# Makes Ray's dashboard agent start 20 s late, past the 15 s its raylet waits for it (what a
# busy machine did to a sweep's start in a test suite run): every time, or only the first
# time when SLOW_AGENT_ONCE names a file to leave behind.
_SLOW_AGENT = """
import os, time
if b"dashboard/agent.py" in open("/proc/self/cmdline", "rb").read():
    once = os.environ.get("SLOW_AGENT_ONCE")
    if not once or not os.path.exists(once):
        if once:
            open(once, "w").close()
        time.sleep(20)
"""

_START_AND_COUNT = """
import psutil, ray
from rich.console import Console
from tune.config import load_config
from tune.cluster import start_ray
start_ray(load_config(None, ["ray.dashboard=false"]), Console(width=400))
print("task:", ray.get(ray.remote(lambda: 42).remote()))
names = [p.name() for p in psutil.Process().children(recursive=True)]
print("gcs servers:", names.count("gcs_server"), "raylets:", names.count("raylet"))
"""


def _slow_agent_env(tmp_path, **extra) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(_SLOW_AGENT)
    return {**os.environ, "PYTHONPATH": str(tmp_path), **extra}


def test_a_start_whose_dashboard_agent_is_too_slow_is_tried_again(tmp_path, model_cache):
    env = _slow_agent_env(tmp_path, SLOW_AGENT_ONCE=str(tmp_path / "slowed"))
    proc = subprocess.run(
        [sys.executable, "-c", _START_AND_COUNT],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "slowed").exists()  # the first agent was slowed
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        "Ray's start timed out (attempt 1 of 3: its dashboard agent was slower than the 15 s "
        "its raylet allows, as on a busy machine); starting it again"
    )
    assert "task: 42" in lines
    # The failed start's GCS (and its monitors) were stopped, not left idling beside the new.
    assert lines[-1] == "gcs servers: 1 raylets: 1"


def test_a_ray_that_never_starts_is_one_line_and_exit_1(tmp_path, model_cache):
    """`medtune sweep --overwrite` where every start fails (one attempt here, to keep the test
    short): one line, exit 1, and the sweep it would have overwritten is left as it was."""
    from tests.tune.conftest import snapshot

    old = tmp_path / "results" / "old"
    (old / "data").mkdir(parents=True)
    (old / "sweep_summary.json").write_text("{}")
    before = snapshot(tmp_path / "results")
    run_cli = (
        "import sys, tune.cluster; tune.cluster.START_ATTEMPTS = 1\n"
        "from tune.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    args = ["sweep", "--overwrite", "model.name=tiny-random", "data.max_records=40", "run.name=old"]
    proc = subprocess.run(
        [sys.executable, "-c", run_cli, *args],
        capture_output=True,
        text=True,
        env=_slow_agent_env(tmp_path, HF_HUB_OFFLINE="1"),
        cwd=tmp_path,
        timeout=240,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        "medtune: error: Ray did not start on this machine in 1 attempts: its raylet gave up "
        "waiting for its dashboard agent each time (Ray allows it 15 s; a busy machine makes "
        "it slower; the raylet's log is raylet.out in the newest /tmp/ray/session_*/logs); run "
        "it again when the machine is less busy"
    ]
    assert snapshot(tmp_path / "results") == before
