"""End a trial that stops making progress, saying where it stuck.

A training step can block for good: a deadlocked data loader or tokenizer after a fork, a hung
GPU, a network filesystem that never answers. Such a trial holds its slot until the sweep ends,
and under the comparing ASHA a trial waiting at a rung for it waits too. `StallWatchdog` times
each stretch of work (a training step, an evaluation batch) in a thread of its own; when one
runs past `train.stall_timeout_s` it fails the trial with `TrialStalledError`, whose message
holds the training thread's stack and, on its last line, how long and where it stuck.

The error is raised in the trial process's main thread, not the stuck one. That thread runs Ray
Tune's `train()` call, which waits in Python (a queue read with a timeout) for the training
thread's next report, so the error lands there however the training thread is blocked (in C
code no exception would ever reach it). Tune then records the trial as errored with that
message and stops its process instead of reusing it; the training thread is a daemon and ends
with the process. Time spent in `ray.tune.report` (the driver deciding, ASHA's wait to
compare, a checkpoint's upload) is not timed.
"""

from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

__all__ = ["StallWatchdog", "TrialStalledError"]


class TrialStalledError(RuntimeError):
    """A trial made no progress for longer than `train.stall_timeout_s`."""


class StallWatchdog:
    """Time the calling thread's work; fail `target` (a thread id; the main thread by default)
    when one stretch overruns. `timeout_s=None` watches nothing.

    Use it as a context manager (or `start` and `stop`) in the thread that does the work, call
    `beat(what)` as each stretch begins, and wrap waits that are not the trial's own (reports)
    in `paused()`.
    """

    def __init__(
        self, timeout_s: float | None, target: int | None = None, poll_s: float | None = None
    ):
        self.timeout_s = timeout_s
        self.target = threading.main_thread().ident if target is None else target
        self.poll_s = poll_s if poll_s is not None else min(5.0, (timeout_s or 0) / 4)
        self.fired: str | None = None  # the reason, once the trial has been failed
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._worker: int | None = None
        self._since = time.monotonic()
        self._what = "the start of training"
        self._paused = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StallWatchdog:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._worker = threading.get_ident()
        self.beat("the start of the trial")
        if self.timeout_s is not None:
            self._thread = threading.Thread(
                target=self._watch, name="medtune-watchdog", daemon=True
            )
            self._thread.start()

    def beat(self, what: str) -> None:
        """A stretch of work named `what` (e.g. "step 12") begins now."""
        with self._lock:
            self._since, self._what = time.monotonic(), what

    @contextmanager
    def paused(self):
        """Do not time what runs inside (waiting on someone else)."""
        with self._lock:
            self._paused = True
        try:
            yield
        finally:
            with self._lock:
                self._paused = False
                self._since = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            with self._lock:
                idle = time.monotonic() - self._since
                if self._paused or idle < self.timeout_s:
                    continue
                self.fired = self._reason(idle)
                _raise_in(self.target, _stalled(self.fired))
                return

    def _reason(self, idle: float) -> str:
        frame = sys._current_frames().get(self._worker)
        stack = traceback.extract_stack(frame) if frame is not None else []
        summary = (
            f"stalled: no progress for {idle:.0f} s in {self._what}{_where(stack)}, so "
            f"train.stall_timeout_s={self.timeout_s:g} ended it (process {os.getpid()}; its "
            "stack in the trial's error.txt)"
        )
        lines = "".join(traceback.format_list(stack)).rstrip()
        return f"the training thread's stack:\n{lines}\n{summary}" if lines else summary


def _where(stack: list[traceback.FrameSummary]) -> str:
    """The innermost frame outside Python's own library (the caller of a blocking wait), and
    the innermost one when it differs."""
    if not stack:
        return ""
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    own = next(
        (f for f in reversed(stack) if not Path(f.filename).resolve().is_relative_to(stdlib)),
        stack[-1],
    )
    inner = f" (in {_short(stack[-1])})" if own is not stack[-1] else ""
    return f", at {_short(own)}{inner}"


def _short(frame: traceback.FrameSummary) -> str:
    parts = Path(frame.filename).parts
    return f"{'/'.join(parts[-2:])}:{frame.lineno} {frame.name}"


def _stalled(reason: str) -> type[TrialStalledError]:
    # An asynchronous exception is raised by its class alone, so the class carries the message.
    def __init__(self, *args):
        TrialStalledError.__init__(self, *(args or (reason,)))

    return type("TrialStalledError", (TrialStalledError,), {"__init__": __init__})


def _raise_in(thread_id: int, exc: type[BaseException]) -> None:
    """Raise `exc` in thread `thread_id` at its next Python instruction."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc)
    )
    if done != 1:  # 0: no such thread (already gone); never more than one by id
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
