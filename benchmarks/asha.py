"""`make bench`: what ASHA saves. The same medtune sweep with `scheduler.name=asha` (medtune's
ASHA, which compares a trial before promoting it), with Ray's ASHA as it ships
(`scheduler.wait_to_compare=false`) and with `fifo`.

    python benchmarks/asha.py [--model smollm2-135m] [--trials 4] [--steps 16] [--repeats 3]

All sides are the real CLI (`medtune sweep --no-export`) as subprocesses, alternating within
one process run, with the same search seed (`--seed`, default 0) in every repeat, or seed r
in repeat r with `--vary-seed`: every side starts from the same start-up trials, and TPE's
later draws follow the results each side feeds it (a stopped trial reports its last loss), so
they can differ between sides; ASHA's decisions also vary with timing.
Measured: training steps spent, wall time, best validation loss (medtune's `answer_loss` of
each sweep's best checkpoint, re-scored the same way), test loss of that checkpoint, peak
memory and disk. The machinery is `benchmarks/peer.py`'s (`--sides peer,asha,ray_asha,fifo`
there runs them all at once).
Results: benchmarks/results/<date>-asha-<model>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--name" or a.startswith("--name=") for a in argv):
        argv = [*argv, "--name", "asha"]
    main(argv, default_sides="asha,ray_asha,fifo")
