"""Start or join the Ray a sweep runs on: joined by `ray.address`, or started on this machine
with the trial processes set up for training (normal priority, jemalloc that keeps what it
frees, none started ahead of the sweep). Imports Ray alone, not torch: a probe or a test
starts Ray as a sweep does in a second.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import ray

from tune.errors import RayStartError

if TYPE_CHECKING:
    from rich.console import Console

    from tune.config import SweepConfig


def use_normal_priority_workers() -> None:
    """Have the Ray started next run its workers (the trials) at niceness 0, not Ray's 15.

    At 15, every wake-up of Ray's own threads and daemons preempts a trial thread at once, and
    its other torch threads wait for it at the next barrier: a trial using all the cores lost
    about 5% of its speed to that on a 2-core machine (BENCHMARKS.md, "Trial efficiency").
    Trials are the work here, not background load. A cluster joined by address keeps the
    setting its `ray start` had (docs/cluster.md)."""
    os.environ.setdefault("RAY_worker_niceness", "0")


# For the trial processes of a Ray medtune starts, through the jemalloc Ray ships: keep freed
# pages for reuse (no decay; `release_memory` purges them after each trial) and serve large
# allocations from the normal arenas, not from one that unmaps each as soon as it is freed.
# A training step frees and re-allocates GBs of activations and logits; with glibc, and with
# jemalloc's defaults, every step faults those pages in again (BENCHMARKS.md, tenth session).
JEMALLOC_CONF = "oversize_threshold:0,dirty_decay_ms:-1,muzzy_decay_ms:-1"


def ray_jemalloc() -> str | None:
    """The jemalloc library Ray ships (its Linux wheels do) and trials run on, if any."""
    lib = Path(ray.__file__).parent / "core" / "libjemalloc.so"
    return str(lib) if lib.exists() else None


def use_jemalloc_workers() -> None:
    """Have the Ray started next run its workers (the trials) on the jemalloc that Ray ships
    and already runs its raylet and GCS on, with `JEMALLOC_CONF`: 1.2x the tokens per second
    of a CPU trial on glibc's malloc. Ray's own switch (`RAY_LD_PRELOAD_ON_WORKERS`); it does
    nothing where Ray has no jemalloc (macOS) or `LD_PRELOAD` is already set, and either
    variable set by the user wins. A cluster joined by address keeps the setting its
    `ray start` had (docs/cluster.md)."""
    os.environ.setdefault("RAY_LD_PRELOAD_ON_WORKERS", "1")
    os.environ.setdefault("MALLOC_CONF", JEMALLOC_CONF)


def use_no_idle_workers() -> None:
    """Have the Ray started next start no Python workers before a sweep asks for them.

    Ray starts one per CPU as the first driver connects, belonging to no job. Tune starts
    each trial process for the sweep's job instead (a bare Tuner's 2 trials ran in 2 new
    processes beside the 2 idle ones; a plain Ray actor does take one), so each was a Python
    process importing Ray for nothing, about 1 CPU-second while the driver and the first
    trials start (a 2-trial tiny sweep on 2 cores: about 2 s and 2 CPU-s more, measured in
    docs/architecture.md). Ray's own switch (`RAY_prestart_worker_first_driver`); a user's
    setting wins. A cluster joined by address keeps the setting its `ray start` had
    (docs/cluster.md)."""
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")


def use_trial_worker_settings() -> None:
    """Every setting above, for the trial processes of the Ray started next on this machine:
    `start_ray` applies them, and so do the benchmarks that start Ray themselves, so that
    their trials run as a sweep's do. A user's own setting of any of them wins."""
    use_normal_priority_workers()
    use_jemalloc_workers()
    use_no_idle_workers()


# Ray 2.60's raylet gives its dashboard agent (a Python process importing about 2 CPU-s of
# modules) 15 s to write its ports and aborts if it has not; ray.init then raises "The current
# node timed out during startup" about 33 s after it began. On a busy 2-core machine the agent
# took 17.5 s (a test suite run beside 3 sweeps, 2026-12-02). The wait is hard-coded there
# (NodeManager::WaitForDashboardAgentPorts); a second start finds the agent's modules in the
# page cache and often a quieter machine, so the start is tried again, twice.
START_ATTEMPTS = 3
_START_TIMED_OUT = "timed out during startup"


def init_local_ray(console: Console | None = None, **kwargs):
    """`ray.init` of a new Ray on this machine, started again when its raylet gave up on a
    slow dashboard agent (above), the failed start's processes stopped first; `RayStartError`
    after `START_ATTEMPTS` such failures. "local", not None: Ray would join the cluster that
    `ray start` last started on this machine (/tmp/ray/ray_current_cluster), someone else's on
    a shared machine."""
    for attempt in range(1, START_ATTEMPTS + 1):
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:
            return ray.init(address="local", **kwargs)
        except Exception as e:
            if _START_TIMED_OUT not in str(e):
                raise
            _stop_new_ray_processes(before)
            if attempt == START_ATTEMPTS:
                raise RayStartError(
                    f"Ray did not start on this machine in {START_ATTEMPTS} attempts: its raylet "
                    "gave up waiting for its dashboard agent each time (Ray allows it 15 s; a "
                    "busy machine makes it slower; the raylet's log is raylet.out in the newest "
                    "/tmp/ray/session_*/logs); run it again when the machine is less busy"
                ) from e
            if console is not None:
                console.print(
                    f"Ray's start timed out (attempt {attempt} of {START_ATTEMPTS}: its "
                    "dashboard agent was slower than the 15 s its raylet allows, as on a busy "
                    "machine); starting it again"
                )


def _stop_new_ray_processes(before: set[int]) -> None:
    """Kill the processes a failed `ray.init` started (its GCS, monitors and dashboard lived
    on, idle, beside the next start): this process's descendants not in `before` that run
    Ray's own programs."""
    ray_dir = str(Path(ray.__file__).parent)
    procs = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.pid not in before and any(ray_dir in arg for arg in proc.cmdline()):
                proc.kill()
                procs.append(proc)
        except psutil.Error:
            pass  # already gone
    psutil.wait_procs(procs, timeout=10)


def start_ray(cfg: SweepConfig, console: Console | None = None) -> None:
    """Join `ray.address`, or start Ray here with its dashboard bound to 127.0.0.1."""
    if ray.is_initialized():
        return
    # Trial stdout would drown the progress lines; Tune keeps each trial's log and error.
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if cfg.ray.address:
        context = ray.init(address=cfg.ray.address, **quiet)
    else:
        use_trial_worker_settings()
        context = init_local_ray(
            console, include_dashboard=cfg.ray.dashboard, dashboard_host="127.0.0.1", **quiet
        )
    if console is not None and context.dashboard_url:
        console.print(f"Ray dashboard: http://{context.dashboard_url}")
