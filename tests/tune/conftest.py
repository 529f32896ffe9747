"""One real tiny sweep for the tests of sweep, export, generate and serve to share; Tune
with or without medtune's hooks; helpers to kill what a driver started."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

MEDTUNE = str(Path(sys.executable).parent / "medtune")
MAX_STEPS, SAMPLES = 20, 4


@pytest.fixture(scope="session")
def sweep(tmp_path_factory, model_cache):
    """`medtune sweep` on tiny-random with ASHA, confirmation (top-2 x 2 seeds) and export.

    Run once per test session even under pytest-xdist: the first worker to need it runs it
    under a file lock in the folder all workers share; the others wait and reuse it
    (pytest-xdist's recipe for session fixtures).
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / "e2e-shared"
    with FileLock(f"{root}.lock"):
        log = root / "medtune-sweep.stdout"
        if not log.exists():
            root.mkdir(exist_ok=True)
            log.write_text(_run_sweep(root))
    return root / "results" / "e2e", log.read_text()


@pytest.fixture
def tune_as_is(monkeypatch):
    """Tune's controller without medtune's hooks (tune/controller.py), for one test: the hooks
    patch it for the whole process, once installed by a test or an in-process sweep."""
    from ray.train._internal.storage import _FilesystemSyncer
    from ray.tune.execution.tune_controller import TuneController

    for owner, name in [
        (TuneController, "_process_trial_save"),
        (TuneController, "__setstate__"),
        (TuneController, "_remove_actor"),
        (_FilesystemSyncer, "_sync_up_command"),
    ]:
        current = getattr(owner, name)
        monkeypatch.setattr(owner, name, getattr(current, "__wrapped__", current))


@pytest.fixture
def tune_as_medtune_runs_it(tune_as_is):
    """Tune's controller with the hooks every medtune sweep installs, for one test: the
    experiment state, with each trial's logs, saved on storage at every checkpoint, each file
    copied whole."""
    from tune.controller import copy_state_atomically, snapshot_at_every_checkpoint

    snapshot_at_every_checkpoint()
    copy_state_atomically()


def _run_sweep(root: Path) -> str:
    args = [
        "sweep",
        "model.name=tiny-random",
        "data.max_records=120",
        f"search.num_samples={SAMPLES}",
        "scheduler.name=asha",
        f"train.max_steps={MAX_STEPS}",
        "train.eval_every=5",
        "train.per_device_batch_size=4",
        "export.confirm_top_k=2",
        "export.confirm_seeds=2",
        "export.generate_samples=6",
        "export.max_new_tokens=16",
        "run.name=e2e",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [MEDTUNE, *args], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def start_medtune(
    args: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`medtune ARGS` in the background, in its own session and process group (as a terminal's
    foreground job: a signal to the group reaches the Ray it starts too), its output in `log`;
    `env` is added to the environment. Never joins another Ray (RAY_ADDRESS unset)."""
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    full.pop("RAY_ADDRESS", None)
    with log.open("w") as out:
        return subprocess.Popen(
            [MEDTUNE, *args],
            cwd=cwd,
            env=full,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def session_processes(sid: int) -> list[tuple[int, int]]:
    """(pid, process group) of each live, not zombie, process of a session."""
    procs = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, pgid, session = stat.read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError):
            continue
        if int(session) == sid and state != "Z":
            procs.append((int(stat.parent.name), int(pgid)))
    return procs


def kill_session(sid: int) -> None:
    """SIGKILL what is left of a driver's session: its own processes and no one else's."""
    for pid, _ in session_processes(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and modification time: "left untouched" checks."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }
