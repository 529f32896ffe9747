"""ASHA that compares before it promotes.

Ray's asynchronous successive halving decides each trial the moment it reaches a rung, against
the results recorded there so far. The first trial to reach a rung has nothing to be compared
with, so it is always promoted: at the 4-16 trials a sweep on one machine runs, the first
trials started tend to run their whole budget whatever their loss (BENCHMARKS.md measured
4 of 8 trials running to the end).

`ComparingASHA` keeps Ray's rungs and cutoffs and changes one thing: a trial that reaches a rung
holding fewer than `reduction_factor` results, while another trial could still get there,
pauses (Tune saves its last checkpoint, a few MB of adapter and optimizer state, and its CPUs
go to the next trial) until enough results are in. Then ASHA's own cutoff over the rung
decides: below it the trial is stopped, otherwise it resumes from its checkpoint. When no other
trial can reach the rung any more, a waiting trial is decided on what the rung holds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

_ENDED = (Trial.TERMINATED, Trial.ERROR)


class ComparingASHA(AsyncHyperBandScheduler):
    """ASHA in which no trial is promoted before it has been compared (module docstring).

    `num_samples` and `max_concurrent` are the sweep's: they tell whether another trial can
    still reach a rung, so that a trial never waits for one that will not come.
    """

    def __init__(self, *, num_samples: int, max_concurrent: int | None = None, **asha):
        super().__init__(**asha)
        self._num_samples = num_samples
        self._max_concurrent = max_concurrent or math.inf
        self._quorum = math.ceil(self._reduction_factor)
        self._waiting: dict[str, float] = {}  # trial_id -> the milestone it waits at

    def on_trial_result(self, tune_controller: TuneController, trial: Trial, result: dict) -> str:
        t, value = result.get(self._time_attr), result.get(self._metric)
        if t is None or value is None or t >= self._max_t:
            return super().on_trial_result(tune_controller, trial, result)
        rung = self._rung_reached(trial.trial_id, t)
        if rung is None:
            return super().on_trial_result(tune_controller, trial, result)
        milestone, recorded = rung
        if len(recorded) + 1 < self._quorum and self._could_arrive(
            tune_controller, milestone, recorded, trial.trial_id
        ):
            recorded[trial.trial_id] = self._metric_op * value
            self._waiting[trial.trial_id] = milestone
            return TrialScheduler.PAUSE
        action = super().on_trial_result(tune_controller, trial, result)
        self._settle(
            tune_controller, ending=trial.trial_id if action == TrialScheduler.STOP else None
        )
        return action

    # Tune calls these before it marks the trial ended: `ending` counts it as ended already,
    # or a trial waiting for it would wait for a result that never comes.
    def on_trial_complete(self, tune_controller: TuneController, trial: Trial, result: dict):
        self._waiting.pop(trial.trial_id, None)
        super().on_trial_complete(tune_controller, trial, result)
        self._settle(tune_controller, ending=trial.trial_id)

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial):
        self._waiting.pop(trial.trial_id, None)
        super().on_trial_remove(tune_controller, trial)
        self._settle(tune_controller, ending=trial.trial_id)

    def on_trial_error(self, tune_controller: TuneController, trial: Trial):
        self._waiting.pop(trial.trial_id, None)
        super().on_trial_error(tune_controller, trial)
        self._settle(tune_controller, ending=trial.trial_id)

    def wait_again(self, trial_id: str, milestone: float) -> None:
        """Before a resume: the trial, saved paused at `milestone` (its result recorded there),
        waits again, unless the rung already had its quorum: then it had been promoted and
        waited only for a free slot. One promoted without a quorum, because no rival could
        come, is decided again on the same rung (as before, unless the sweep was extended)."""
        rungs = dict(self._brackets[0]._rungs)  # one bracket, as medtune builds it
        if len(rungs[milestone]) < self._quorum:
            self._waiting[trial_id] = milestone

    def on_trial_add(self, tune_controller: TuneController, trial: Trial):
        super().on_trial_add(tune_controller, trial)
        if trial.trial_id in self._waiting and trial.status == Trial.PENDING:
            # Restored by `--resume`: Tune resets a paused trial to PENDING and starts every
            # PENDING trial; PAUSED again (before Tune files it by status), it waits.
            trial.set_status(Trial.PAUSED)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        """A promoted paused trial first (ASHA would have kept it running), then a new one;
        never a trial that is still waiting to be compared."""
        # Tune asks at every step of its loop: settle again, with every status current, so no
        # trial can wait on a rung that nothing will reach.
        if self._waiting:
            self._settle(tune_controller)
        trials = tune_controller.get_trials()
        for trial in trials:
            if trial.status == Trial.PAUSED and trial.trial_id not in self._waiting:
                return trial
        for trial in trials:
            if trial.status == Trial.PENDING:
                return trial
        return None

    def debug_string(self) -> str:
        return f"{super().debug_string()}\nwaiting to be compared: {len(self._waiting)}"

    def _rung_reached(self, trial_id: str, t: float) -> tuple[float, dict] | None:
        """The rung a result at time `t` is decided at, as Ray's `_Bracket.on_result` finds it
        (rungs run from the top; a rung the trial is recorded at is passed over)."""
        for milestone, recorded in self._trial_info[trial_id]._rungs:
            if t >= milestone and trial_id not in recorded:
                return milestone, recorded
        return None

    def _could_arrive(
        self,
        tune_controller: TuneController,
        milestone: float,
        recorded: dict,
        trial_id: str,
        ending: str | None = None,
    ) -> bool:
        """Whether a trial other than `trial_id` (and `ending`) may still report at
        `milestone`."""
        trials = tune_controller.get_trials()
        live = [t for t in trials if t.status not in _ENDED and t.trial_id != ending]
        for t in live:
            if t.trial_id == trial_id or t.trial_id in recorded:
                continue
            if (t.last_result or {}).get(self._time_attr, 0) < milestone:
                return True
        # A trial the searcher has yet to suggest, if the concurrency cap lets it start.
        return len(trials) < self._num_samples and len(live) < self._max_concurrent

    def _settle(self, tune_controller: TuneController, ending: str | None = None) -> None:
        """Decide every waiting trial whose rung has its quorum or can get no more results."""
        by_id = {t.trial_id: t for t in tune_controller.get_trials()}
        for trial_id, milestone in list(self._waiting.items()):
            if trial_id not in self._waiting:  # decided by a nested settle (via stop_trial)
                continue
            trial = by_id.get(trial_id)
            if trial is None or trial.status in _ENDED:
                self._waiting.pop(trial_id, None)
                continue
            recorded = dict(self._trial_info[trial_id]._rungs)[milestone]
            if len(recorded) < self._quorum and self._could_arrive(
                tune_controller, milestone, recorded, trial_id, ending
            ):
                continue
            # Out of the waiting list before stop_trial, which calls back into on_trial_remove.
            del self._waiting[trial_id]
            cutoff = self._trial_info[trial_id].cutoff(recorded)
            if cutoff is not None and recorded[trial_id] < cutoff:
                self._num_stopped += 1
                tune_controller.stop_trial(trial)
                # Tune re-serializes a stopped trial for its experiment state only when the
                # trial has a live actor; a paused one has none, and the saved state (what the
                # dashboard and --resume read) would keep it PAUSED (Ray 2.60.0, pinned).
                tune_controller._mark_trial_to_checkpoint(trial)
