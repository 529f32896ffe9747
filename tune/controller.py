"""Two hooks on Ray Tune's controller that every medtune sweep installs (`tune/sweep.py`),
so that `--resume` after a killed driver loses at most the interval in flight.

Both patch private methods of Ray 2.60's `TuneController` (Ray is pinned in pyproject.toml),
process-wide and once; each keeps Tune's own method as `__wrapped__`, which the tests use to
undo it. This module needs Ray alone (imported when a hook is installed), not torch or
transformers, so a driver script (and a test) can install the hooks in a second.
"""

from __future__ import annotations

import functools
import os


def snapshot_at_every_checkpoint() -> None:
    """Have Tune save its experiment state (what `--resume` reads) after every trial
    checkpoint, and wait for it on storage before the trial is told to go on.

    Tune saves it every 10 s at most, or once a trial has checkpointed `num_to_keep` times,
    and in the background: a driver killed in between resumed trials from an older
    checkpoint, and that checkpoint could already be deleted as not among the best. Forcing
    a background save at each checkpoint was not enough: a busy driver could still be
    copying the state while the trial, already told to go on, uploaded its next checkpoint,
    so a kill lost two intervals (tests/tune/test_resume.py caught it in CI). Saving it
    synchronously between registering the checkpoint and scheduling the trial's next
    interval makes the bound strict: a kill loses at most the interval in flight. Cost: one
    small state write per evaluation, in the driver. Ray 2.60's private
    `TuneController._process_trial_save` (Ray is pinned in pyproject.toml).

    The same save keeps each trial's rows whole. When Tune restarts a trial (ComparingASHA
    resuming a paused one, or a retry after a failure), its JSON logger copies the trial's
    `result.json` back from storage over the driver's: a copy synced only every 10 s lacked
    the row of the rung a trial was paused at (a test's bare Tuner lost it), and that file is
    what the summary and the confirmation's top-k read (tests/tune/test_trial_logs.py)."""
    from ray.tune.execution.tune_controller import TuneController

    # Tune warns of "snapshotting too often" when `num_to_keep` is 1: here it is intended.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    process = TuneController._process_trial_save
    if getattr(process, "medtune", False):
        return

    @functools.wraps(process)  # keeps Tune's own as `__wrapped__` (tests undo the hook)
    def process_and_snapshot(self, trial, checkpoint_value) -> None:
        process(self, trial, checkpoint_value)
        if checkpoint_value.checkpoint:
            self.checkpoint(force=True, wait=True)

    process_and_snapshot.medtune = True
    TuneController._process_trial_save = process_and_snapshot


def drop_stale_decisions_on_restore() -> None:
    """Have a restored Tune forget the scheduling decisions the killed driver had in flight.

    Tune saves its controller's `_queued_trial_decisions` with the experiment state and
    restores them. A trial restored from its checkpoint then finds its old CONTINUE waiting:
    its first result after the restore starts another interval at once, before Tune has
    registered that result's checkpoint, and the trial runs one interval ahead of its saved
    checkpoints for the rest of the run (two `train` calls in flight), so a second kill lost
    two intervals (tests/tune/test_resume.py caught it; traced to the decision on Ray 2.60).
    Those decisions belong to trial processes that no longer exist; a restored run starts
    without them, as a fresh one does. Ray 2.60's private `TuneController.__setstate__`."""
    from ray.tune.execution.tune_controller import TuneController

    setstate = TuneController.__setstate__
    if getattr(setstate, "medtune", False):
        return

    @functools.wraps(setstate)
    def setstate_without_decisions(self, state) -> None:
        state = dict(state)
        state.pop("_queued_trial_decisions", None)
        state.pop("_cached_trial_decisions", None)
        setstate(self, state)

    setstate_without_decisions.medtune = True
    TuneController.__setstate__ = setstate_without_decisions
