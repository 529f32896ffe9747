"""Fault injection, for tests only: make trials fail the way real ones do.

    MEDTUNE_FAULT=oom@2 medtune sweep ...                   # every trial fails at step 2
    MEDTUNE_FAULT=raise@2,nan@2,oom@2,none MEDTUNE_FAULT_DIR=/tmp/claims medtune sweep ...

Each entry is `kind@step`: `raise` raises a RuntimeError as the step begins, `oom` raises
`torch.OutOfMemoryError` (what CUDA raises), `nan` makes that step's forward pass produce NaN,
so its loss and gradients are NaN for real and the trial's own guard has to catch it; `hang`
never ends that step, blocked in C code (a stuck trial: a deadlocked lock, a hung collective),
for the stall watchdog (`train.stall_timeout_s`) or to hold a trial before a rung while a test
interrupts the sweep; `none` does nothing. With one entry
every trial takes it; with several, the k-th trial to start takes the k-th (trials past the
list run clean), claiming its entry with a file in `MEDTUNE_FAULT_DIR`. Ray workers inherit the
driver's environment when it starts Ray, so set both before `medtune sweep`. Never set them
outside tests: see docs/security.md.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Fault", "fault_from_env"]

_KINDS = ("raise", "nan", "oom", "hang", "none")


@dataclass(frozen=True)
class Fault:
    kind: str
    step: int

    def before_step(self, step: int, model: torch.nn.Module) -> None:
        """Fail as `step` (1-based) begins, if it is this fault's step."""
        if step != self.step or self.kind == "none":
            return
        where = f"injected by MEDTUNE_FAULT={self.kind}@{self.step}"
        if self.kind == "raise":
            raise RuntimeError(f"trial failed at step {step} ({where})")
        if self.kind == "oom":
            raise torch.OutOfMemoryError(f"out of memory at step {step} ({where})")
        if self.kind == "hang":
            # Blocked in C, as a deadlocked lock or a hung collective is: no Python exception
            # reaches this thread. Until the stall watchdog fails the trial or the sweep stops.
            threading.Event().wait()
        # NaN enters at the embeddings and flows through the real forward and backward pass.
        model.get_input_embeddings().register_forward_hook(lambda m, i, out: out * float("nan"))


def fault_from_env() -> Fault | None:
    """This trial's fault from MEDTUNE_FAULT (None when unset or when none is left)."""
    spec = os.environ.get("MEDTUNE_FAULT", "").strip()
    if not spec:
        return None
    faults = [_parse(part.strip()) for part in spec.split(",")]
    if len(faults) == 1:
        return faults[0]
    folder = os.environ.get("MEDTUNE_FAULT_DIR")
    if not folder:
        raise ValueError(
            f"MEDTUNE_FAULT={spec}: several entries need MEDTUNE_FAULT_DIR, a folder where "
            "trials claim them"
        )
    Path(folder).mkdir(parents=True, exist_ok=True)
    for k, fault in enumerate(faults):
        try:
            os.close(os.open(Path(folder) / f"claim-{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        return fault
    return None


def _parse(part: str) -> Fault:
    if part == "none":
        return Fault("none", 0)
    match = re.fullmatch(r"(\w+)@(\d+)", part)
    if not match or match[1] not in _KINDS or int(match[2]) < 1:
        raise ValueError(
            f"MEDTUNE_FAULT: got {part!r}; each entry is kind@step with kind one of "
            f"{', '.join(_KINDS)} and step >= 1, e.g. nan@2"
        )
    return Fault(match[1], int(match[2]))
