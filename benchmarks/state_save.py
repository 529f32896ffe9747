"""`make bench`: the copy of Tune's experiment state to local storage, Tune's against medtune's.

    python benchmarks/state_save.py [--sweep FOLDER] [--trials 4,32,128] [--repeats 40]

At every evaluation of every trial, medtune has Tune save its experiment state and waits for
the copy of Tune's staging folder to storage (the state files and each trial's params,
result.json and progress.csv; not the checkpoints, which the trials upload themselves). This
times that copy as Tune makes it (Ray's `_upload_to_fs_path`: pyarrow's `copy_files`, every
file rewritten in place) and as medtune makes it (`tune.atomic_storage.copy_changed_files`:
the changed files only, each to a temporary name and renamed), alternating in one process.
The folder is a real sweep's (a 4-trial tiny-random `medtune sweep`, run first unless
`--sweep` names a results folder), its trial folders copied to make each `--trials` count.
Two cases: nothing changed since the last save (as for the finished trials of a running
sweep), and one trial reported (its result.json and progress.csv one row longer, the state
files rewritten), which is what each save at a checkpoint follows.
Results: benchmarks/results/<date>-state-save.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import _cpu_name, _ratios, _spread, _version  # noqa: E402

SWEEP = [
    "sweep",
    "model.name=tiny-random",
    "data.max_records=120",
    "search.num_samples=4",
    "train.max_steps=20",
    "train.eval_every=5",
    "--no-export",
    "run.name=state-save",
]


def _run_sweep(root: Path) -> Path:
    medtune = str(Path(sys.executable).parent / "medtune")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([medtune, *SWEEP], cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"state_save.py: the sweep failed:\n{proc.stdout[-2000:]}{proc.stderr}")
    return root / "results" / "state-save"


def _staging(sweep: Path, trials: int, into: Path) -> Path:
    """Tune's staging folder as a save copies it: the sweep's folder without checkpoints or
    medtune's own files, its trial folders copied round-robin up to `trials`."""
    stage = into / f"staging-{trials}"
    shutil.copytree(
        sweep,
        stage,
        ignore=shutil.ignore_patterns(
            "checkpoint_*", ".*", "data", "confirm", "sweep_summary.json", "*.yaml", "*.html"
        ),
    )
    have = sorted(stage.glob("trial_*"))
    for extra in have[trials:]:
        shutil.rmtree(extra)
    for i in range(trials - len(have)):
        shutil.copytree(have[i % len(have)], stage / f"trial_copy{i:04d}")
    return stage


def _time_copies(stage: Path, repeats: int, changed: bool) -> dict[str, list[float]]:
    import pyarrow.fs as pafs
    from ray.train._internal.storage import _upload_to_fs_path

    from tune.atomic_storage import copy_changed_files

    local = pafs.LocalFileSystem()
    copies = {
        "tune": lambda target: _upload_to_fs_path(str(stage), local, target),
        "medtune": lambda target: copy_changed_files(str(stage), target),
    }
    trial = sorted(stage.glob("trial_*"))[0]
    ms: dict[str, list[float]] = {name: [] for name in copies}
    with tempfile.TemporaryDirectory(dir=stage.parent) as storage:
        for r in range(repeats + 1):  # the first round fills storage and is not counted
            if changed:  # one trial reported: its logs a row longer, the state rewritten
                for log in (trial / "result.json", trial / "progress.csv"):
                    with log.open("a") as f:
                        f.write(json.dumps({"step": r}) + "\n")
                for state in stage.glob("*_state-*.json"):
                    state.write_bytes(state.read_bytes())
            for name in list(copies) if r % 2 == 0 else list(reversed(copies)):
                start = time.perf_counter()
                copies[name](f"{storage}/{name}")
                if r:
                    ms[name].append((time.perf_counter() - start) * 1000)
        landed = [_contents(Path(storage, name)) for name in copies]
        if landed[0] != landed[1]:
            raise SystemExit("state_save.py: Tune's copy and medtune's differ")
    return ms


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, help="a finished sweep's results folder")
    parser.add_argument("--trials", default="4,32,128", help="trial counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=40, help="timed copies per filesystem")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.trials.split(",")]
    load_at_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        sweep = args.sweep.resolve() if args.sweep else _run_sweep(Path(tmp))
        rows = []
        for trials in counts:
            stage = _staging(sweep, trials, Path(tmp))
            files = [p for p in stage.rglob("*") if p.is_file()]
            size = sum(p.stat().st_size for p in files)
            row = {"trials": trials, "files": len(files), "bytes": size}
            for case in ("unchanged", "one_trial_reported"):
                ms = _time_copies(stage, args.repeats, case != "unchanged")
                row[case] = {
                    **{name: _spread(values) for name, values in ms.items()},
                    "medtune_vs_tune": _ratios(ms["medtune"], ms["tune"]),
                }
                print(
                    f"{trials:4d} trials, {len(files):5d} files, {case:9s}: median "
                    f"{row[case]['tune']['median']:7.2f} ms Tune's copy, "
                    f"{row[case]['medtune']['median']:7.2f} ms medtune's",
                    flush=True,
                )
            rows.append(row)
    out = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "processor": _cpu_name(),
            "cores": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
            "python": sys.version.split()[0],
            **{p: _version(p) for p in ("ray", "pyarrow")},
        },
        "sweep": str(args.sweep) if args.sweep else " ".join(SWEEP),
        "repeats": args.repeats,
        "copies": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{datetime.now():%Y%m%d-%H%M%S}-state-save.json"
    (args.out / name).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
