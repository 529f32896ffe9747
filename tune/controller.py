"""Four hooks on Ray Tune that every medtune sweep installs (`tune/sweep.py`): three so that
`--resume` after a killed driver loses at most the interval in flight (one of them on the copy
of Tune's state to storage), one so that a trial process Tune no longer needs is not started
only to be stopped (installed for the confirmation's Tune run too, `tune/confirm.py`).

All patch private methods of Ray 2.60's `TuneController` and storage syncer (Ray is pinned in
pyproject.toml), process-wide and once; each keeps Tune's own method as `__wrapped__`, which
the tests use to undo it. This module needs Ray alone (imported when a hook is installed),
not torch or transformers, so a driver script (and a test) can install the hooks in a second.
"""

from __future__ import annotations

import functools
import os
import time


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


def copy_state_atomically() -> None:
    """Have Tune copy its experiment folder to a local `run.storage` with
    `tune.atomic_storage.copy_changed_files`: each file whole or not at all, and only the
    files that changed since the last save.

    Tune copies its whole staging folder at every save, each file rewritten in place: a
    driver killed during a copy left `experiment_state-`, `search_gen_state-` and
    `searcher-state-` of that run empty (seen once in CI's kill test), and `--resume` read
    the newest, empty state. With a save at every checkpoint (`snapshot_at_every_checkpoint`)
    the copy is also on each trial's path, and rewriting every finished trial's logs each
    time grew with the sweep (BENCHMARKS.md, twentieth session). Storage at a URI keeps
    Tune's copy. Ray 2.60's private `_FilesystemSyncer._sync_up_command`."""
    import pyarrow.fs as pafs
    from ray.train._internal.storage import _FilesystemSyncer

    from tune.atomic_storage import copy_changed_files

    command = _FilesystemSyncer._sync_up_command
    if getattr(command, "medtune", False):
        return

    @functools.wraps(command)
    def copy_command(self, local_path: str, uri: str, exclude=None):
        if exclude or not isinstance(self.storage_filesystem, pafs.LocalFileSystem):
            return command(self, local_path, uri, exclude)
        return copy_changed_files, {"source": local_path, "target": uri}

    copy_command.medtune = True
    _FilesystemSyncer._sync_up_command = copy_command


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


def kill_actors_that_never_started() -> None:
    """Have Tune kill a trial process it no longer needs before it has started, rather than
    wait for it to start so as to stop it.

    With `reuse_actors`, Tune starts a process for the next pending trial as soon as a CPU is
    free, and hands that trial a cached process instead when a trial finishes first: it then
    asks the new one to stop gracefully, which it can do only once it has imported torch and
    transformers and built the trainable (about 5 CPU-seconds on a 2-core machine, spent
    beside the training), and a sweep's end waits for it (3.8 s of a 25 s tiny sweep here).
    No trial ran in such a process, so there is nothing to stop: it is killed at once, as
    Tune itself kills one that is still stopping after its cleanup timeout. Ray 2.60's private
    `TuneController._remove_actor` and `_started_actors`."""
    from ray.tune.execution.tune_controller import TuneController

    remove = TuneController._remove_actor
    if getattr(remove, "medtune", False):
        return

    @functools.wraps(remove)
    def remove_or_kill(self, tracked_actor) -> None:
        if tracked_actor in self._started_actors:
            remove(self, tracked_actor)
            return
        if self._actor_manager.remove_actor(tracked_actor, kill=True):
            # Tracked until the kill is done, as Tune tracks a stopping one.
            self._stopping_actors[tracked_actor] = time.monotonic()
            self._earliest_stopping_actor = min(
                self._earliest_stopping_actor, self._stopping_actors[tracked_actor]
            )

    remove_or_kill.medtune = True
    TuneController._remove_actor = remove_or_kill
