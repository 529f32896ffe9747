"""The stall watchdog with real threads: a training thread blocked in C code, and a waiting
thread that polls a queue in Python as Ray Tune's `train()` call does while it waits for the
trial's next report. The error must reach the waiting thread, say where the other one stuck, and
never fire while the trial is working or waiting on the driver."""

from __future__ import annotations

import queue
import threading
import time

from trainables.watchdog import StallWatchdog, TrialStalledError


def _run(train, timeout_s: float = 0.5, wait_s: float = 10.0):
    """Run `train(watchdog)` in a thread while this test's waiting thread polls a queue as Tune's
    does. Returns what reached the waiting thread (an exception, or "done") and the watchdog."""
    results: queue.Queue = queue.Queue()
    outcome = {}
    release = threading.Event()

    def waiting():
        deadline = time.monotonic() + wait_s
        try:
            while time.monotonic() < deadline:
                try:
                    outcome["result"] = results.get(timeout=0.05)
                    return
                except queue.Empty:
                    pass
            outcome["result"] = "still waiting"
        except TrialStalledError as err:
            outcome["result"] = err

    waiter = threading.Thread(target=waiting)
    waiter.start()
    watchdog = StallWatchdog(timeout_s, target=waiter.ident, poll_s=0.05)

    def training():
        watchdog.start()
        try:
            train(watchdog, release)
        finally:
            watchdog.stop()
        results.put("done")

    trainer = threading.Thread(target=training, daemon=True)
    trainer.start()
    waiter.join()
    release.set()  # the stuck thread, if any, may end now
    trainer.join(timeout=5)
    return outcome["result"], watchdog


def _stuck_in_step_3(watchdog, release):
    watchdog.beat("step 3")
    release.wait()  # blocked in C: no exception can reach this thread


def test_a_thread_blocked_in_c_fails_the_waiting_thread_with_where_it_stuck():
    result, watchdog = _run(_stuck_in_step_3)
    assert isinstance(result, TrialStalledError), result
    message = str(result)
    *stack, summary = message.splitlines()
    assert stack[0] == "the training thread's stack:"
    assert any("_stuck_in_step_3" in line for line in stack)
    assert summary.startswith("stalled: no progress for ")
    # The caller of the blocking wait, then the library frame it blocks in.
    assert " in step 3, at trainables/test_watchdog.py:" in summary
    assert "_stuck_in_step_3 (in " in summary and "threading.py:" in summary
    assert "train.stall_timeout_s=0.5 ended it" in summary
    assert watchdog.fired == message


def test_steady_beats_and_long_paused_waits_never_fire():
    def working(watchdog, release):
        for step in range(1, 13):  # 12 x 0.15 s: over twice the timeout, each step well below
            watchdog.beat(f"step {step}")
            time.sleep(0.15)
        with watchdog.paused():  # blocked in a report for longer than the timeout
            time.sleep(1.2)
        time.sleep(0.2)  # timed again from the end of the pause

    result, watchdog = _run(working, timeout_s=0.8)
    assert result == "done" and watchdog.fired is None


def test_the_timeout_counts_from_the_last_beat():
    def slow_step(watchdog, release):
        watchdog.beat("step 1")
        time.sleep(0.1)
        watchdog.beat("the evaluation at step 1")
        release.wait(timeout=3)  # longer than the timeout: fails in the evaluation

    result, _ = _run(slow_step, timeout_s=0.3)
    assert isinstance(result, TrialStalledError)
    assert " in the evaluation at step 1, at " in str(result).splitlines()[-1]


def test_no_timeout_watches_nothing():
    # train.stall_timeout_s left empty: the stuck step is left alone (the waiting thread gives
    # up on its own after 1 s here) and no watchdog thread is started.
    result, watchdog = _run(_stuck_in_step_3, timeout_s=None, wait_s=1.0)
    assert result == "still waiting" and watchdog.fired is None
    assert watchdog._thread is None
