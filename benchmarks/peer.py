"""`make bench`: a medtune sweep against `Trainer.hyperparameter_search(backend="ray")`.

    python benchmarks/peer.py [--model smollm2-135m] [--trials 4] [--steps 16] [--repeats 3]
    python benchmarks/peer.py --sides peer,asha,fifo      # also the ASHA-vs-FIFO comparison
    python benchmarks/peer.py --sides peer_default,asha --repeats 6 --vary-seed
                                       # search seed r in repeat r: compares search luck too
    python benchmarks/asha.py                              # only ASHA against FIFO

Sides, each run as its own subprocess (interpreter start, imports, data preparation and Ray
start included in its wall time), alternating within one process run of this script:

  peer  what a user of transformers writes instead of medtune: a `Trainer` with a `model_init`
        (the usual workaround for a hyperparameter that shapes the model: LoRA rank comes in
        through `model_init(trial)`), evaluation and saving every `--eval-every` steps, and
        `trainer.hyperparameter_search(backend="ray", hp_space=..., scheduler=ASHAScheduler(...))`
        as in the transformers docs (Ray's default random search);
  peer_fp32  the same peer with TrainingArguments' default number format (fp32), where the
        peer side gets bf16 (AMX, AVX512_BF16 CPUs): what a user who does not pass bf16=True runs;
  peer_default  the peer as the transformers docs' shortest call writes it: no scheduler
        (Tune's FIFO: every trial runs its full budget) and the default number format (fp32);
  asha  `medtune sweep ... scheduler.name=asha --no-export` (the real CLI);
  fifo  the same with `scheduler.name=fifo`;
  noreuse  asha with `run.reuse_actors=false`: a fresh Ray actor (process, imports) per trial;
  ray_asha  asha with `scheduler.wait_to_compare=false`: Ray's ASHA as it ships, which
        promotes the first trial to reach a rung unopposed (tune/scheduler.py);
  random_start  asha with `search.startup=random`: TPE's own random start-up trials instead
        of medtune's stratified ones (a Latin hypercube), to measure what stratifying buys;
  together  asha with `TUNE_MAX_PENDING_TRIALS_PG` at this machine's trial slots: the first
        trials start at once, where Tune's default with a searcher (1 pending trial) starts
        them one by one, each once the last one's process is up (docs/architecture.md).

Every side gets the same data (medtune's demo set, split and tokenized by medtune's own
`prepare_sweep`, so the same validation and test examples), model, search space (read from
medtune's `lora_default`), trial count, step budget, batch, sequence length, LoRA alpha/dropout,
learning-rate schedule, CPUs per trial, evaluation interval and number format (the peer gets
`bf16=True` where medtune's `train.precision=auto` picks bf16, i.e. on AMX and AVX512_BF16 CPUs).

Measured per run: wall time of the subprocess; peak memory of its whole process tree (Ray's
GCS, raylet, dashboard and workers included) sampled every 0.5 s as summed RSS and PSS; disk
used by checkpoints (and everything written); training steps spent; and, after the timed part,
the winner scored by this script the same way for every side: medtune's `answer_loss`
(mean loss per answer token) on the validation examples both sides evaluate on, and on the
test split. The peer returns no model, only a `BestRun` (trial id, objective, hyperparameters):
this script takes the best trial's best checkpoint from `best_run.run_summary` (Ray's
`ExperimentAnalysis`) and loads its adapter onto the base model; that is also what a user must
do (or retrain with the best hyperparameters). The peer's own `eval_loss` averages per-batch
means, so its winner is re-scored; medtune's reported loss is already `answer_loss`, and its
best checkpoint (`tune.export.best_checkpoint`) is re-scored too as a check.

Results: benchmarks/results/<date>-peer-<model>.json with machine, date, versions and each run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIDES = (
    "peer",
    "peer_fp32",
    "peer_default",
    "asha",
    "fifo",
    "noreuse",
    "together",
    "random_start",
    "ray_asha",
)
PACKAGES = ("torch", "transformers", "peft", "ray", "optuna", "psutil")


# -- the sizes every side shares ---------------------------------------------------------------


def medtune_overrides(args, seed: int) -> list[str]:
    """The sweep's settings as `medtune sweep` overrides; the peer reads the same config."""
    out = [
        f"model.name={args.model}",
        f"data.max_length={args.max_length}",
        f"search.num_samples={args.trials}",
        f"search.seed={seed}",
        f"train.max_steps={args.steps}",
        f"train.eval_every={args.eval_every}",
        f"train.per_device_batch_size={args.batch}",
        f"train.eval_max_examples={args.val_examples}",
        f"resources.cpus_per_trial={args.cpus_per_trial}",
    ]
    if args.max_records:
        out.append(f"data.max_records={args.max_records}")
    return out + args.set


def side_overrides(side: str) -> list[str]:
    """What a medtune side sets beyond the settings every side shares."""
    own = {
        "fifo": ["scheduler.name=fifo"],
        "noreuse": ["run.reuse_actors=false"],
        "random_start": ["search.startup=random"],
        "ray_asha": ["scheduler.wait_to_compare=false"],
    }
    return ([] if side == "fifo" else ["scheduler.name=asha"]) + own.get(side, [])


# -- measuring a subprocess tree ---------------------------------------------------------------


class TreeSampler:
    """Peak summed RSS and PSS of a process and all its descendants, every `interval` s; also
    the CPU seconds the tree used against the whole machine's (what others took meanwhile)."""

    def __init__(self, pid: int, interval: float = 0.5):
        import psutil

        self.psutil, self.root = psutil, psutil.Process(pid)
        self.interval = interval
        self.peak_rss = self.peak_pss = 0
        self.peak_processes = 0
        self.samples = 0
        self.cpu_by_pid: dict[int, float] = {}
        self._stop = threading.Event()
        self._cpu0 = psutil.cpu_times()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        cpu1 = self.psutil.cpu_times()
        busy = sum(
            getattr(cpu1, f) - getattr(self._cpu0, f)
            for f in ("user", "nice", "system", "irq", "softirq", "steal")
            if hasattr(cpu1, f)
        )
        self.machine_cpu_s = busy
        self.tree_cpu_s = sum(self.cpu_by_pid.values())

    def _run(self):
        ps = self.psutil
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except ps.Error:
                break
            rss = pss = 0
            for p in procs:
                try:
                    mem = p.memory_full_info()
                    t = p.cpu_times()
                except ps.Error:
                    continue
                rss += mem.rss
                pss += getattr(mem, "pss", mem.rss)
                self.cpu_by_pid[p.pid] = t.user + t.system
            self.samples += 1
            self.peak_processes = max(self.peak_processes, len(procs))
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._stop.wait(self.interval)


def du(path: Path, only: str | None = None) -> int:
    """Bytes of files under `path`; with `only`, under folders whose name starts with it."""
    total = 0
    for root, _dirs, files in os.walk(path):
        if only and not any(part.startswith(only) for part in Path(root).parts):
            continue
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def run_side(side: str, args, seed: int, work: Path) -> dict:
    """Run one side as a subprocess under the sampler; return its raw measurements."""
    work.mkdir(parents=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if not args.ray_address:
        # Its own Ray, found by no one else and finding no one else's (`ray start` clusters
        # are looked up under the temp dir).
        env["RAY_TMPDIR"] = str(Path(tempfile.mkdtemp(prefix="rb-", dir="/tmp")))
    if side == "together":
        slots = int((os.cpu_count() or 1) // args.cpus_per_trial)
        env["TUNE_MAX_PENDING_TRIALS_PG"] = str(max(1, min(slots, args.trials)))
    overrides = medtune_overrides(args, seed)
    if side.startswith("peer"):
        spec = {
            "overrides": overrides,
            "work": str(work),
            "ray_address": args.ray_address,
            "fp32": side in ("peer_fp32", "peer_default"),
            "asha": side != "peer_default",
            "search_seed": seed if args.vary_seed else None,
        }
        cmd = [sys.executable, str(Path(__file__).resolve()), "_peer", json.dumps(spec)]
    else:
        medtune = str(Path(sys.executable).parent / "medtune")
        cmd = [
            medtune,
            "sweep",
            "--no-export",
            *overrides,
            *side_overrides(side),
            f"run.storage={work}",
            "run.name=sweep",
        ]
        if args.ray_address:
            cmd.append(f"ray.address={args.ray_address}")
    load0 = os.getloadavg()
    begun = datetime.now().isoformat(timespec="seconds")
    epoch = time.time()
    code = _code_version()
    with open(work / "log.txt", "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
        with TreeSampler(proc.pid) as sampler:
            rc = proc.wait()
        wall = time.perf_counter() - start
    if rc != 0:
        tail = (work / "log.txt").read_text()[-3000:]
        raise RuntimeError(f"{side} side exited with {rc}:\n{tail}")
    run = {
        "side": side,
        "seed": seed if args.vary_seed or not side.startswith("peer") else None,
        "started": begun,
        "code": code,
        "wall_s": wall,
        "peak_rss_bytes": sampler.peak_rss,
        "peak_pss_bytes": sampler.peak_pss,
        "peak_processes": sampler.peak_processes,
        "memory_samples": sampler.samples,
        "tree_cpu_s": sampler.tree_cpu_s,
        "machine_cpu_s": sampler.machine_cpu_s,
        "other_cpu_s": sampler.machine_cpu_s - sampler.tree_cpu_s,
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
    }
    if side.startswith("peer"):
        found = json.loads((work / "peer.json").read_text())
        run |= found["result"]
        run["disk_checkpoint_bytes"] = du(work / "ray", "checkpoint") + du(work / "trainer")
        run["disk_total_bytes"] = du(work / "ray") + du(work / "trainer")
    else:
        summary = json.loads((work / "sweep" / "sweep_summary.json").read_text())
        from tune.export import best_checkpoint

        ckpt, metrics = best_checkpoint(work / "sweep", "eval_loss")
        run |= {
            "steps_trained": summary["steps_trained"],
            "stopped_early": summary["stopped_early"],
            "trial_seconds": summary["trial_seconds"],
            "errored": summary["errored"],
            "trials": [
                {
                    "config": t["config"],
                    "last_step": t["last_step"],
                    "best_eval_loss": t["best_eval_loss"],
                    "seconds": t["seconds"],
                }
                for t in summary["trials"]
            ],
            "trial_starts_s": _trial_starts(work / "sweep", epoch),
            "reported_best_val_loss": summary["best"]["best_eval_loss"],
            "winner_checkpoint": str(ckpt),
            "winner_step": metrics["step"],
            "disk_checkpoint_bytes": du(work / "sweep", "checkpoint"),
            "disk_total_bytes": du(work / "sweep"),
        }
    if "RAY_TMPDIR" in env:
        run["ray_tmp_bytes"] = du(Path(env["RAY_TMPDIR"]))
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
    return run


def _trial_starts(run: Path, epoch: float) -> list[float]:
    """Seconds from the subprocess's start to each trial's start (its first report's timestamp
    less the time it had run), sorted; to within a second, as Tune's timestamps are whole
    seconds."""
    starts = []
    for result in run.glob("trial_*/result.json"):
        first = json.loads(result.read_text().splitlines()[0])
        starts.append(round(first["timestamp"] - first["time_total_s"] - epoch, 2))
    return sorted(starts)


# -- scoring the winners the same way ----------------------------------------------------------


class Scorer:
    """Loads the data once (medtune's prepare_sweep: the sides' exact splits) and scores an
    adapter checkpoint on validation and test with `answer_loss`."""

    def __init__(self, args):
        from rich.console import Console

        from tune.config import load_config
        from tune.sweep import prepare_sweep

        cfg = load_config(None, medtune_overrides(args, 0))
        self.prep = prepare_sweep(cfg, Console(quiet=True))
        self.cfg = self.prep.cfg
        limit = self.cfg.train.eval_max_examples
        self.validation = self.prep.encoded["validation"][:limit]
        self.test = self.prep.encoded["test"]
        self.sizes = {
            "train_examples": len(self.prep.encoded["train"]),
            "validation_examples": len(self.validation),
            "test_examples": len(self.test),
        }

    def score(self, checkpoint: str) -> dict:
        import torch
        from peft import PeftModel

        from trainables.evaluation import answer_loss
        from trainables.models import load_model

        torch.set_num_threads(os.cpu_count() or 1)
        start = time.perf_counter()
        model = PeftModel.from_pretrained(load_model(self.prep.model_path), checkpoint)
        loaded = time.perf_counter() - start
        bs, pad = self.cfg.train.eval_batch_size, self.prep.pad_token_id
        return {
            "val_loss": answer_loss(model, self.validation, bs, pad),
            "test_loss": answer_loss(model, self.test, bs, pad),
            "model_load_s": loaded,
        }


# -- the peer, as a user of transformers writes it ---------------------------------------------


def peer_main(spec: dict) -> None:
    """Runs in its own process: `Trainer.hyperparameter_search(backend="ray")` (+ ASHA)."""
    from peft import LoraConfig, get_peft_model
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from rich.console import Console
    from transformers import (
        AutoModelForCausalLM,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from tune.config import load_config
    from tune.sweep import prepare_sweep

    work = Path(spec["work"])
    # The same splits and tokens medtune trains on (medtune's own preparation: writes nothing).
    cfg = load_config(None, spec["overrides"])
    prep = prepare_sweep(cfg, Console(quiet=True))
    train_cfg = cfg.train
    train_set = prep.encoded["train"]
    eval_set = prep.encoded["validation"][: train_cfg.eval_max_examples]
    from trainables.models import load_tokenizer, lora_target_modules
    from trainables.precision import resolve_precision

    tokenizer = load_tokenizer(prep.model_path)
    model_path = prep.model_path

    def model_init(trial):
        # The usual workaround: a hyperparameter that shapes the model has to come in here.
        # Trainer calls this once with trial=None when it is built, then once per trial.
        r = int(trial["lora_r"]) if trial else 8
        base = AutoModelForCausalLM.from_pretrained(model_path)
        targets, fan_in_fan_out = lora_target_modules(base, None)
        lora = LoraConfig(
            r=r,
            lora_alpha=2 * r,
            lora_dropout=train_cfg.lora_dropout,
            target_modules=targets,
            fan_in_fan_out=fan_in_fan_out,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(base, lora)

    space = prep.space.describe()

    def ray_hp_space(trial):
        make = {
            "loguniform": lambda d: tune.loguniform(d["low"], d["high"]),
            "uniform": lambda d: tune.uniform(d["low"], d["high"]),
            "int": lambda d: tune.randint(d["low"], d["high"] + 1),
            "choice": lambda d: tune.choice(d["values"]),
        }
        return {name: make[d["type"]](d) for name, d in space.items()}

    training_args = TrainingArguments(
        output_dir=str(work / "trainer"),
        max_steps=train_cfg.max_steps,
        per_device_train_batch_size=train_cfg.per_device_batch_size,
        per_device_eval_batch_size=train_cfg.eval_batch_size,
        lr_scheduler_type=train_cfg.lr_scheduler,
        warmup_steps=train_cfg.warmup_ratio,
        eval_strategy="steps",
        eval_steps=train_cfg.eval_every,
        save_strategy="steps",
        save_steps=train_cfg.eval_every,
        logging_steps=train_cfg.eval_every,
        seed=train_cfg.seed,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        # The number format medtune's trials pick here (bf16 on AMX, AVX512_BF16 CPUs): the
        # peer's user can pass bf16=True too, so the comparison measures what medtune does
        # beyond it.
        bf16=not spec.get("fp32") and resolve_precision(train_cfg.precision, cuda=False) == "bf16",
    )
    trainer = Trainer(
        model_init=model_init,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
    )
    if spec.get("ray_address"):
        import ray

        ray.init(address=spec["ray_address"], log_to_driver=False)
    evaluations = math.ceil(train_cfg.max_steps / train_cfg.eval_every)
    asha = {}  # peer_default passes none: Tune's FIFO, every trial runs its full budget
    if spec.get("asha", True):
        asha["scheduler"] = ASHAScheduler(
            metric="objective",
            mode="min",
            max_t=evaluations,
            grace_period=cfg.scheduler.grace_period,
            reduction_factor=cfg.scheduler.reduction_factor,
        )
    search = {}  # by default Ray's random search, seeded through Trainer's set_seed(0)
    if spec.get("search_seed") is not None:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        search["search_alg"] = BasicVariantGenerator(random_state=spec["search_seed"])
    best_run = trainer.hyperparameter_search(
        direction="minimize",
        backend="ray",
        hp_space=ray_hp_space,
        n_trials=cfg.search.num_samples,
        **asha,
        **search,
        resources_per_trial={"cpu": cfg.resources.cpus_per_trial},
        storage_path=str(work / "ray"),
        name="peer",
    )
    # What it returned: no model. The best trial's best checkpoint is in the analysis.
    analysis = best_run.run_summary
    best_trial = next(t for t in analysis.trials if t.trial_id == best_run.run_id)
    checkpoint = analysis.get_best_checkpoint(best_trial, metric="objective", mode="min")
    with checkpoint.as_directory() as folder:
        (adapter,) = Path(folder).glob("checkpoint-*")
    trials = []
    for t in analysis.trials:
        iterations = int(t.last_result.get("training_iteration", 0) or 0)
        trials.append(
            {
                "config": {k: t.config[k] for k in space},
                "last_step": iterations * train_cfg.eval_every,
                "best_hf_eval_loss": t.metric_analysis.get("objective", {}).get("min"),
                "status": t.status,
                "seconds": float(t.last_result.get("time_total_s", 0.0) or 0.0),
            }
        )
    result = {
        "steps_trained": sum(t["last_step"] for t in trials),
        "stopped_early": sum(t["last_step"] < train_cfg.max_steps for t in trials),
        "errored": sum(t["status"] == "ERROR" for t in trials),
        "trial_seconds": sum(t["seconds"] for t in trials),
        "trials": trials,
        "reported_best_hf_eval_loss": best_run.objective,
        "best_hyperparameters": best_run.hyperparameters,
        "winner_checkpoint": str(adapter),
    }
    (work / "peer.json").write_text(json.dumps({"result": result}, indent=2, default=str))


# -- the process run: alternate the sides, score, summarize ------------------------------------


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(runs: list[dict], sides: list[str]) -> dict:
    keys = (
        "wall_s",
        "best_val_loss",
        "test_loss",
        "steps_trained",
        "peak_pss_bytes",
        "peak_rss_bytes",
        "disk_checkpoint_bytes",
        "disk_total_bytes",
        "tree_cpu_s",
        "other_cpu_s",
    )
    out: dict = {
        side: {k: spread([r[k] for r in runs if r["side"] == side]) for k in keys} for side in sides
    }
    by_repeat: dict[int, dict] = {}
    for r in runs:
        by_repeat.setdefault(r["repeat"], {})[r["side"]] = r
    pairs = {
        "peer_vs_medtune": ("peer", "asha"),
        "peer_fp32_vs_medtune": ("peer_fp32", "asha"),
        "peer_default_vs_medtune": ("peer_default", "asha"),
        "fifo_vs_asha": ("fifo", "asha"),
        "noreuse_vs_asha": ("noreuse", "asha"),
        "together_vs_asha": ("together", "asha"),
        "random_start_vs_asha": ("random_start", "asha"),
        "peer_default_vs_random_start": ("peer_default", "random_start"),
        "ray_asha_vs_asha": ("ray_asha", "asha"),
        "fifo_vs_ray_asha": ("fifo", "ray_asha"),
    }
    for name, (a, b) in pairs.items():
        if a not in sides or b not in sides:
            continue
        reps = [rep for rep in by_repeat.values() if a in rep and b in rep]
        ratio = {
            "wall_time": [rep[a]["wall_s"] / rep[b]["wall_s"] for rep in reps],
            "steps": [rep[a]["steps_trained"] / rep[b]["steps_trained"] for rep in reps],
            # CPU seconds the run's own process tree used: less sensitive to other load.
            "cpu_seconds": [rep[a]["tree_cpu_s"] / rep[b]["tree_cpu_s"] for rep in reps],
            "peak_pss": [rep[a]["peak_pss_bytes"] / rep[b]["peak_pss_bytes"] for rep in reps],
            "disk_checkpoints": [
                rep[a]["disk_checkpoint_bytes"] / max(1, rep[b]["disk_checkpoint_bytes"])
                for rep in reps
            ],
            # > 0: b's best validation loss is lower (better) than a's, by this share of a's.
            "best_val_loss_gain": [
                (rep[a]["best_val_loss"] - rep[b]["best_val_loss"]) / rep[a]["best_val_loss"]
                for rep in reps
            ],
        }
        if all(len(rep[side].get("trial_starts_s", [])) >= 2 for rep in reps for side in (a, b)):
            # Seconds from the run's start until its first trial, and until the second.
            for i, what in enumerate(("first", "second")):
                ratio[f"{what}_trial_start_s_difference"] = [
                    rep[a]["trial_starts_s"][i] - rep[b]["trial_starts_s"][i] for rep in reps
                ]
        out[name] = {k: {**spread(v), "per_repeat": v} for k, v in ratio.items()}
    return out


def build_parser(default_sides: str = "peer,asha") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--val-examples", type=int, default=16)
    parser.add_argument("--max-records", type=int, default=None)
    parser.add_argument("--cpus-per-trial", type=float, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="medtune's search.seed in every repeat (the peer's random search is seeded by "
        "Trainer's set_seed(args.seed=0))",
    )
    parser.add_argument(
        "--vary-seed",
        action="store_true",
        help="repeat r searches with seed --seed + r on every side (medtune's search.seed, the "
        "peer's BasicVariantGenerator(random_state=...)): repeats then sample search luck, "
        "not only timing noise",
    )
    parser.add_argument("--sides", default=default_sides, help=f"comma-separated of {SIDES}")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more medtune override for every side, e.g. scheduler.reduction_factor=3",
    )
    parser.add_argument("--ray-address", default=None, help="join this Ray instead of starting")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON")
    parser.add_argument("--name", default="peer", help="JSON file name part")
    parser.add_argument("--keep", action="store_true", help="keep every run's folder")
    parser.add_argument(
        "--resummarize",
        type=Path,
        help="recompute the summary of a results JSON from its runs (e.g. an interrupted one)",
    )
    return parser


def main(argv: list[str] | None = None, default_sides: str = "peer,asha") -> dict:
    parser = build_parser(default_sides)
    args = parser.parse_args(argv)
    if args.resummarize:
        out = json.loads(args.resummarize.read_text())
        out["summary"] = summarize(out["runs"], out["sides"])
        out["repeats_completed"] = sorted({r["repeat"] for r in out["runs"]})
        args.resummarize.write_text(json.dumps(out, indent=2, default=str))
        print(json.dumps(out["summary"], indent=2))
        return out
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if bad := [s for s in sides if s not in SIDES]:
        parser.error(f"--sides: unknown {bad}; choose from {SIDES}")

    started = datetime.now()
    scorer = Scorer(args)  # also converts/caches the model once, outside every timed run
    work_root = Path(tempfile.mkdtemp(prefix="medtune-peer-"))
    runs = []
    try:
        for repeat in range(args.repeats):
            shift = repeat % len(sides)
            for side in sides[shift:] + sides[:shift]:  # alternate who goes first
                work = work_root / f"r{repeat}-{side}"
                seed = args.seed + repeat if args.vary_seed else args.seed
                run = run_side(side, args, seed=seed, work=work)
                scores = scorer.score(run["winner_checkpoint"])
                run |= {
                    "repeat": repeat,
                    "best_val_loss": scores["val_loss"],
                    "test_loss": scores["test_loss"],
                    "winner_load_s": scores["model_load_s"],
                }
                runs.append(run)
                _write(args, started, scorer, sides, runs, final=False)
                print(
                    f"repeat {repeat} {side:4s}: {run['wall_s']:7.1f} s, "
                    f"{run['steps_trained']} steps, best val {run['best_val_loss']:.4f}, "
                    f"test {run['test_loss']:.4f}, peak PSS {run['peak_pss_bytes'] / 2**30:.2f} "
                    f"GiB, checkpoints {run['disk_checkpoint_bytes'] / 2**20:.1f} MiB, "
                    f"others' CPU {run['other_cpu_s']:.0f} s",
                    flush=True,
                )
                if not args.keep:
                    shutil.rmtree(work, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work_root, ignore_errors=True)
    out, path = _write(args, started, scorer, sides, runs, final=True)
    print(json.dumps(out["summary"], indent=2))
    print(f"written: {path}")
    return out


def _write(args, started, scorer, sides, runs, final: bool) -> tuple[dict, Path]:
    """The JSON, rewritten after every run so an interrupted process run keeps its runs."""
    out = {
        "complete": final,
        "date": started.isoformat(timespec="seconds"),
        "finished": datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "processor": _cpu_name(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "versions": {p: version(p) for p in PACKAGES},
        },
        "sizes": {
            "model": args.model,
            "trials": args.trials,
            "max_steps": args.steps,
            "eval_every": args.eval_every,
            "batch": args.batch,
            "max_length": args.max_length,
            "cpus_per_trial": args.cpus_per_trial,
            "overrides": args.set,
            "search_space": scorer.prep.space.describe(),
            "data": scorer.cfg.data.source,
            **scorer.sizes,
        },
        "repeats": args.repeats,
        "sides": sides,
        "summary": summarize(runs, sides),
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started:%Y%m%d-%H%M%S}-{args.name}-{args.model}.json"
    path.write_text(json.dumps(out, indent=2, default=str))
    return out, path


def _code_version() -> dict:
    """The checkout's commit and uncommitted files of medtune's packages when a run starts:
    the CLI side imports the working tree, which may change between runs."""

    def git(*cmd: str) -> str:
        proc = subprocess.run(
            ["git", *cmd], cwd=HERE.parent, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    dirty = git("status", "--porcelain", "--", "tune", "trainables", "search_spaces")
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": dirty.splitlines()}


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_peer":
        peer_main(json.loads(sys.argv[2]))
    else:
        main()
