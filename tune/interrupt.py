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

import logging
import os
import signal
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
        console.print(f"\n{stopping} ({again} quits at once)")
        os.kill(os.getpid(), signal.SIGUSR1)

    before_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    before_level = _TUNE_RUN_LOGGER.level
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    before = {s: signal.signal(s, on_stop_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in before.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set in C
        _TUNE_RUN_LOGGER.setLevel(before_level)
        if before_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = before_env
