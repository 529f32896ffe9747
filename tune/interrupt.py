"""Ctrl-C or SIGTERM during a Tune run (a sweep, export's confirmation runs): stop it the way
Tune stops on SIGUSR1, and say so at once.

Tune's own SIGINT handler stops the run gracefully too (trials stop, the experiment state that
`--resume` reads is saved one last time), but silently under medtune's quiet console, so a
user saw nothing for seconds and then what looked like a finished sweep. medtune turns Tune's
SIGINT handler off (`TUNE_DISABLE_SIGINT_HANDLER`, read when `Tuner.fit` starts), prints one
line on the first Ctrl-C and passes it on as SIGUSR1, the stop signal Tune always listens to.
SIGTERM, what a job scheduler or Kubernetes sends before it kills a process, is answered the
same way: Tune does not listen to it, and the handler `ray.init` sets exits at once
(SystemExit), the trials' work since their last checkpoint lost and the sweep left as if its
driver had been killed.
A second signal raises KeyboardInterrupt, as a second Ctrl-C: quit at once, state as last saved.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console

__all__ = ["Interrupted", "StopRequest", "signals_stop_tune"]

# Where Tune logs "Trials did not complete" after a stop: medtune prints its own account.
_TUNE_RUN_LOGGER = logging.getLogger("ray.tune.tune")


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped work that is no use half done; the CLI prints this and exits
    130."""


@dataclass
class StopRequest:
    requested: bool = False  # Ctrl-C or SIGTERM came while Tune ran: its run ended early


@contextmanager
def signals_stop_tune(console: Console, stopping: str) -> Iterator[StopRequest]:
    """Within the block, the first Ctrl-C or SIGTERM prints `stopping` and has Tune stop its
    run; the handlers before it are back after it."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be set from the main thread; Tune's stays on
        return

    def on_stop_signal(signum, frame):
        # The next Ctrl-C or SIGTERM quits at once.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            raise KeyboardInterrupt  # Tune has not started listening yet: nothing to save
        stop.requested = True
        _TUNE_RUN_LOGGER.setLevel(logging.CRITICAL)
        again = "Ctrl-C again" if signum == signal.SIGINT else "SIGTERM received; another"
        console.print(f"\n{stopping} ({again} quits at once)", markup=False)
        os.kill(os.getpid(), signal.SIGUSR1)

    done = threading.Event()  # the block has ended
    # Taken before any signal: a group-wide one may end some of them before a handler runs.
    ray_processes = _local_ray_processes()
    # Python runs a signal's handler in the main thread, between two bytecodes; in a call into
    # Ray that never returns once the raylet is gone, that is never. Its C-level handler writes
    # the signal's number to the wakeup fd at once, from whichever thread took the signal: the
    # watcher reads it there.
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    before_wakeup = signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
    watch = threading.Thread(
        target=_quit_if_ray_ends_after_a_signal,
        args=(wakeup_read, before_wakeup, ray_processes, console, done),
        daemon=True,
    )
    watch.start()
    before_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    before_level = _TUNE_RUN_LOGGER.level
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    before = {s: signal.signal(s, on_stop_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        done.set()
        for signum, handler in before.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set in C
        signal.set_wakeup_fd(before_wakeup)
        watch.join()
        os.close(wakeup_read)
        os.close(wakeup_write)
        _TUNE_RUN_LOGGER.setLevel(before_level)
        if before_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = before_env


def _local_ray_processes() -> list:
    """The live processes (Popen) of the Ray that `ray.init` started in this process; none when
    it joined a cluster, or where a Ray upgrade drops this private API."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    processes = [p.process for infos in getattr(node, "all_processes", {}).values() for p in infos]
    return [process for process in processes if process.poll() is None]


def _quit_if_ray_ends_after_a_signal(
    wakeup: int, forward_to: int, processes: list, console: Console, done: threading.Event
) -> None:
    """While Tune runs, watch the Ray this process started: a SIGTERM sent to the whole process
    group (`timeout`, Slurm's scancel, systemd) stops its processes too, and once its raylet is
    gone Tune waits for it in calls no signal interrupts, until Ray's core worker ends this
    process (exit 1, silently) or the GCS client gives up (60 s). Ray's Python processes (its
    monitor, log monitor, dashboard) end at once on SIGTERM, long before the raylet has shut
    down: one of them ending after Ctrl-C or SIGTERM came (read from the wakeup fd, whether or
    not the main thread's handler has run) is the cue. Quit as Ray's own SIGTERM handler
    would: stop what is left of that Ray and exit 130, the state as last saved, as after a
    killed driver (`--resume` goes on from it)."""
    received = None
    while not done.is_set():
        if select.select([wakeup], [], [], 0.05)[0]:
            numbers = os.read(wakeup, 512)
            if forward_to != -1:  # someone else's wakeup fd was set before this block
                with contextlib.suppress(OSError):
                    os.write(forward_to, numbers)
            stops = [n for n in numbers if n in (signal.SIGINT, signal.SIGTERM)]
            if stops:  # the latest: a Ctrl-C, then the SIGTERM that also stopped Ray
                received = signal.Signals(stops[-1]).name
        if received and any(process.poll() is not None for process in processes):
            console.print(
                f"{received} received, and Ray's processes on this machine were stopped by the "
                "same signal: quitting, the state as last saved"
            )
            for process in processes:
                process.kill()  # what is left of them; the trial processes go with the raylet
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)  # the main thread may be blocked in Ray's calls: only this ends it
