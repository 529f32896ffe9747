"""`make bench`: does a reused trial process give back the memory of the trial before it?

    python benchmarks/reuse_memory.py [--model smollm2-135m] [--trials 8] [--repeats 3]
                                      [--cpus-per-trial 1]

Runs the real CLI (`medtune sweep --no-export`, FIFO, `run.reuse_actors=true`, trials of 1 CPU
each: 2 slots on a 2-core machine) with many short trials, so each trial process runs several
trials in turn, and samples the private memory (USS, /proc/<pid>/smaps_rollup) of every trial
process of that sweep (`ray::ImplicitFunc`) every 0.1 s. Two sides, alternating: "trim"
(medtune as shipped: `release_memory` after each trial, gc + glibc's malloc_trim) and
"no_trim" (`MEDTUNE_MALLOC_TRIM=0`). Reported: each process's USS at its first and last sample
and its peak; the peak over all processes.
Results: benchmarks/results/<date>-reuse-memory-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import _cpu_name, _rollup, _version  # noqa: E402


def trial_processes(driver: int) -> list[int]:
    """The trial processes (`ray::ImplicitFunc`) of the sweep whose driver is `driver`: the
    local Ray it starts is its child, the trial processes that Ray's grandchildren. Only
    those: other Ray instances on the machine (a test suite's) have trial processes too."""
    import psutil

    try:
        descendants = psutil.Process(driver).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    pids = []
    for child in descendants:
        try:
            if "ray::ImplicitFunc" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:  # it ended meanwhile
            continue
    return pids


def run_side(side: str, args, work: Path) -> dict:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "MEDTUNE_MALLOC_TRIM": "0" if side == "no_trim" else "1",
    }
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rm-", dir="/tmp")
    cmd = [
        str(Path(sys.executable).parent / "medtune"),
        "sweep",
        "--no-export",
        f"model.name={args.model}",
        "data.max_length=128",
        f"search.num_samples={args.trials}",
        f"train.max_steps={args.steps}",
        f"train.eval_every={args.steps // 2}",
        "train.per_device_batch_size=2",
        "train.eval_max_examples=8",
        "scheduler.name=fifo",
        f"resources.cpus_per_trial={args.cpus_per_trial}",
        "run.reuse_actors=true",
        f"run.storage={work}",
        f"run.name={side}",
    ]
    samples: dict[int, list[float]] = {}
    start = time.perf_counter()
    with open(work / f"{side}.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            for pid in trial_processes(proc.pid):
                if (r := _rollup(pid)) is not None:
                    samples.setdefault(pid, []).append(r["uss"] / 1024)
            # Often enough that a short trial process (the smoke test's two 2-step trials on a
            # fast CPU) is seen several times; at 0.5 s one was seen under 4 times (2026-12-02).
            time.sleep(0.1)
    if proc.returncode != 0:
        raise RuntimeError(f"{side}: exit {proc.returncode}; see {work / f'{side}.log'}")
    summary = json.loads((work / side / "sweep_summary.json").read_text())
    per_process = [
        {"first_mib": v[0], "last_mib": v[-1], "peak_mib": max(v), "samples": len(v)}
        for v in samples.values()
        if len(v) >= 4  # seen once or twice: ending, or not yet training
    ]
    if not per_process:
        raise RuntimeError(f"{side}: no trial process was seen 4 times; see {work / f'{side}.log'}")
    trials_per_process = len(summary["trials"]) / max(1, len(per_process))
    return {
        "side": side,
        "wall_s": time.perf_counter() - start,
        "processes": per_process,
        "peak_uss_mib": max(p["peak_mib"] for p in per_process),
        "growth_per_trial_mib": statistics.mean(
            (p["last_mib"] - p["first_mib"]) / max(1.0, trials_per_process - 1) for p in per_process
        ),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpus-per-trial", type=int, default=1, help="fewer slots, more reuse")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    runs = []
    started = datetime.now().isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            sides = ["trim", "no_trim"] if i % 2 == 0 else ["no_trim", "trim"]
            for side in sides:
                work = Path(tmp) / f"r{i}"
                work.mkdir(exist_ok=True)
                run = run_side(side, args, work) | {"repeat": i}
                runs.append(run)
                print(
                    f"repeat {i} {side:8s} peak USS of a trial process "
                    f"{run['peak_uss_mib']:.0f} MiB, {run['wall_s']:.1f} s",
                    flush=True,
                )

    def spread(side, key):
        values = [r[key] for r in runs if r["side"] == side]
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    out = {
        "benchmark": "memory of reused trial processes (benchmarks/reuse_memory.py)",
        "date": started,
        "machine": {
            "processor": _cpu_name(),
            "cores": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
            **{p: _version(p) for p in ("torch", "transformers", "peft", "ray")},
        },
        "sizes": {
            "model": args.model,
            "trials": args.trials,
            "steps": args.steps,
            "cpus_per_trial": args.cpus_per_trial,
        },
        "summary": {
            side: {k: spread(side, k) for k in ("peak_uss_mib", "wall_s")}
            for side in ("trim", "no_trim")
        },
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{datetime.now():%Y%m%d-%H%M%S}-reuse-memory-{args.model}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written: {path}")
    return out


if __name__ == "__main__":
    main()
