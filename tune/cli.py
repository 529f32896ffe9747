"""The `medtune` command.

    medtune sweep [--config FILE] [--overwrite] [--no-export] [key=value ...]
    medtune sweep --resume results/<name> [search.num_samples=N]
    medtune config [--config FILE] [key=value ...]
    medtune data inspect [--config FILE] [--json] [key=value ...]
    medtune list [results | s3://bucket/prefix] [--json]
    medtune export results/<name> [--out DIR] [--trial ID]
    medtune generate results/<name>/export ["question"]
    medtune serve results/<name>/export [--port N]
    medtune dashboard results/<name> [--port N]   (or results: an index of its sweeps; or
                                                  s3://bucket/prefix[/<name>], followed)
    medtune report results/<name> [--out FILE]   (or s3://bucket/prefix/<name>, copied)

Bad input prints one line per problem (`medtune: error: ...`) and exits 2 before anything is
written; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from tune.console import duration, make_console
from tune.run_lock import refuse_if_held, sweep_lock

__all__ = ["main", "run"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtune",
        description="Hyperparameter search for LoRA fine-tuning on medical QA, on Ray Tune.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    sweep = sub.add_parser("sweep", help="run a sweep, then export the best model")
    sweep.add_argument("--config", help="YAML config (default: the shipped default sweep)")
    sweep.add_argument("--overwrite", action="store_true", help="replace results/<run.name>")
    sweep.add_argument("--no-export", action="store_true", help="skip the export at the end")
    sweep.add_argument(
        "--resume",
        type=Path,
        metavar="RESULTS",
        help="finish an interrupted sweep, e.g. results/<name> (its saved config is used)",
    )
    sweep.add_argument("--debug", action="store_true", help="show tracebacks")
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.max_steps=100")

    config = sub.add_parser(
        "config", help="print every config key with its value and what it does, as YAML"
    )
    config.add_argument("--config", help="YAML config (default: the shipped default sweep)")
    config.add_argument("--debug", action="store_true", help="show tracebacks")
    config.add_argument("overrides", nargs="*", metavar="key=value")

    data = sub.add_parser("data", help="look at the configured data before a sweep")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser("inspect", help="records, drops, splits, lengths, leakage")
    inspect.add_argument("--config", help="YAML config (default: the shipped default sweep)")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.add_argument("--debug", action="store_true", help="show tracebacks")
    inspect.add_argument("overrides", nargs="*", metavar="key=value")

    listing = sub.add_parser("list", help="the sweeps in a results folder, newest first")
    listing.add_argument(
        "results",
        nargs="?",
        default="results",
        help="a folder of sweeps (default: results) or a run.storage URI such as "
        "s3://bucket/prefix, whose sweeps are copied here without checkpoints first",
    )
    listing.add_argument("--json", action="store_true", help="print the rows as JSON")
    listing.add_argument("--debug", action="store_true", help="show tracebacks")

    export = sub.add_parser("export", help="export the best model of a finished sweep")
    export.add_argument(
        "results",
        help="the sweep's folder, e.g. results/<name>, or its folder under a URI run.storage "
        "(s3://bucket/prefix/<name>) from a machine other than the driver",
    )
    export.add_argument("--out", type=Path, help="destination (default: results/<name>/export)")
    export.add_argument(
        "--trial",
        metavar="ID",
        help="export this trial's best checkpoint instead of the sweep's best (no confirmation "
        "runs); its id as `medtune list` and the dashboard show it",
    )
    export.add_argument("--debug", action="store_true", help="show tracebacks")

    generate = sub.add_parser("generate", help="answer questions with an exported model")
    generate.add_argument("model_dir", type=Path, help="an export, e.g. results/<name>/export")
    generate.add_argument("question", nargs="?", help="omit to ask interactively")
    generate.add_argument(
        "--max-new-tokens", type=int, default=128, help="longest answer, in tokens (default 128)"
    )
    generate.add_argument(
        "--system",
        metavar="TEXT",
        help="a system prompt instead of the one the model was trained with",
    )
    generate.add_argument("--debug", action="store_true", help="show tracebacks")

    to_gguf = sub.add_parser(
        "gguf", help="write an export as one GGUF file (llama.cpp, Ollama, LM Studio)"
    )
    to_gguf.add_argument("model_dir", type=Path, help="an export, e.g. results/<name>/export")
    to_gguf.add_argument(
        "--out", type=Path, help="the file to write (default: <export>/model-<type>.gguf)"
    )
    to_gguf.add_argument(
        "--type",
        default="f16",
        help="the weights' type: f16 (default), q8_0 (about half f16's size) or f32",
    )
    to_gguf.add_argument("--debug", action="store_true", help="show tracebacks")

    serve = sub.add_parser("serve", help="serve an exported model (OpenAI-compatible chat API)")
    serve.add_argument("model_dir", type=Path, help="an export, e.g. results/<name>/export")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--host", default="127.0.0.1", help="bind address; anything but loopback warns"
    )
    serve.add_argument("--debug", action="store_true", help="show tracebacks")

    dashboard = sub.add_parser("dashboard", help="watch or inspect a sweep in the browser")
    dashboard.add_argument(
        "results",
        help="the sweep's folder, e.g. results/<name>, or a folder of sweeps for an index; or "
        "the sweep's folder under a URI run.storage (s3://bucket/prefix/<name>), or that URI "
        "itself for an index, followed from this machine",
    )
    dashboard.add_argument(
        "--port", type=int, default=8266, help="default 8266 (next to Ray's 8265); 0: any free"
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="bind address; anything but loopback warns"
    )
    dashboard.add_argument("--debug", action="store_true", help="show tracebacks")

    report = sub.add_parser("report", help="write the dashboard as one self-contained HTML file")
    report.add_argument(
        "results",
        help="the sweep's folder, e.g. results/<name>; or its folder under a URI run.storage "
        "(s3://bucket/prefix/<name>), copied to this machine first",
    )
    report.add_argument(
        "--out", type=Path, help="default: report.html in the sweep's folder (or in its copy)"
    )
    report.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def run() -> None:
    """The `medtune` console script: `main`, then exit with its code, skipping the garbage
    collection Python runs at exit (2.4 s of a core once torch is loaded; nothing to free)."""
    from trainables.memory import skip_collection_at_exit

    skip_collection_at_exit()
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_overrides_last(sys.argv[1:] if argv is None else argv))
    # Imported here so `medtune --help` and config typos answer before torch and Ray load.
    from tune.errors import USER_ERRORS, RayStartError
    from tune.interrupt import Interrupted

    console = make_console()
    try:
        if args.command == "sweep":
            return _sweep(args, console)
        if args.command == "config":
            from tune.config import load_config
            from tune.config_yaml import commented_yaml

            print(commented_yaml(load_config(args.config, args.overrides)), end="")
            return 0
        if args.command == "data":
            from tune.config import load_config

            load_config(args.config, args.overrides)  # bad input answered before torch loads
            from tune.data_report import run_inspect

            return run_inspect(args, console)
        if args.command == "list":
            from tune.sweep_list import list_sweeps

            return list_sweeps(args.results, console, as_json=args.json)
        if args.command in ("dashboard", "report"):
            return _dashboard(args, console)
        if args.command == "gguf":
            return _gguf(args, console)
        if args.command in ("generate", "serve"):
            from tune.export_layout import check_export

            _check_numbers(args)  # bad numbers and a wrong folder are refused before torch loads
            check_export(args.model_dir)
            _quiet_libraries()
            if args.command == "generate":
                from tune.generate import run_generate

                return run_generate(args, console)
            from tune.serve import run_serve

            return run_serve(args, console)
        return _export(_local_results(args.results, console), console, args.out, args.trial)
    except USER_ERRORS as e:
        if args.debug:
            raise
        from tune.redact import redact_text

        for line in redact_text(str(e)).splitlines():
            print(f"medtune: error: {line}", file=sys.stderr)
        return 2
    except RayStartError as e:  # the machine, not the input: exit 1, in one line too
        if args.debug:
            raise
        print(f"medtune: error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:  # Ctrl-C stopped a Tune run whose half is no use; it says why
        console.print(f"\n{e}", markup=False)
        return 130
    except KeyboardInterrupt:
        if args.debug:
            raise
        # A sweep's first Ctrl-C stops it and saves its state (tune/interrupt.py); this is a
        # second one, or one before the sweep started.
        print("\nmedtune: interrupted", file=sys.stderr)
        return 130


def _gguf(args, console) -> int:
    import json

    from tune.export_layout import check_export
    from tune.gguf_export import check_type, write_gguf

    check_type(args.type)  # bad input answered before torch loads
    check_export(args.model_dir)
    start = time.monotonic()
    with console.status(f"Writing {args.type} GGUF"):
        written = write_gguf(args.model_dir, args.out, args.type)
    console.print(
        f"Wrote {written.path} ({written.type}, {written.tensors} tensors, "
        f"{_mib(written.bytes)}) in {duration(time.monotonic() - start)}",
        markup=False,
    )
    prompt = json.loads((args.model_dir / "medtune_prompt.json").read_text())
    if prompt.get("system_prompt"):
        console.print(
            "It was trained with a system prompt of its own (medtune_prompt.json): give chat "
            "clients the same one (llama-cli -sys TEXT)",
            markup=False,
        )
    return 0


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def _check_numbers(args) -> None:
    """`generate`'s --max-new-tokens and `serve`'s --port, in range (generate raised a
    ValueError deep in transformers for 0, and Ray Serve an OverflowError for a bad port)."""
    from tune.errors import UserError

    if args.command == "generate" and args.max_new_tokens < 1:
        raise UserError(
            f"--max-new-tokens {args.max_new_tokens}: an answer needs at least 1 token; "
            "give a whole number >= 1 (default 128)"
        )
    if args.command == "serve" and not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a TCP port; use 1-65535 (default 8000)")


def _dashboard(args, console: Console) -> int:
    from tune.dashboard import serve_dashboard, write_report
    from tune.errors import UserError

    if args.command == "report":
        write_report(_local_results(args.results, console), args.out, console)
        return 0
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: not a TCP port; use 1-65535, or 0 for any free one")
    folder, shown = Path(args.results), None
    if "://" in args.results:  # a sweep on object storage, followed from any machine
        from tune.redact import redact_text
        from tune.storage import FOLLOW_EVERY_S, follow_sweep

        folder, shown = follow_sweep(args.results), redact_text(args.results)
        console.print(
            f"Following {redact_text(args.results)}: its results without checkpoints, copied to "
            f"{folder} every {FOLLOW_EVERY_S:.0f} s",
            markup=False,
        )
    try:
        serve_dashboard(folder, args.host, args.port, console, shown)
    except OSError as e:
        raise UserError(
            f"--host {args.host} --port {args.port}: cannot listen there ({e.strerror}); "
            "choose another --port, or 0 for any free one"
        ) from None
    return 0


def _sweep(args, console: Console) -> int:
    from tune.config import ConfigError, check_more_trials, load_config, load_saved_config

    # The one setting a resume may change: more trials, to extend a sweep.
    extend = [o for o in args.overrides if o.startswith("search.num_samples=")]
    if args.resume and (args.config or args.overwrite or len(extend) != len(args.overrides)):
        extra = [
            *(["--config"] if args.config else []),
            *(["--overwrite"] if args.overwrite else []),
        ]
        raise ConfigError(
            [
                f"--resume: got {' '.join(extra + args.overrides)}; a resumed sweep takes no "
                "--config, --overwrite or key=value but search.num_samples=N (more trials) and "
                f"keeps the config saved in {args.resume / 'medtune.yaml'}: drop them, or start "
                "a new sweep"
            ]
        )
    cfg = None if args.resume else load_config(args.config, args.overrides)
    more = _num_samples(extend[-1]) if args.resume and extend else None
    # Refused before torch and Ray are loaded, in a second: not a results folder, fewer trials.
    saved = load_saved_config(args.resume) if args.resume else None
    if more is not None:
        check_more_trials(args.resume, saved, more)
    from tune.run_layout import check_new_run, results_dir

    if args.resume:
        refuse_if_held(args.resume)  # at once; resume_sweep takes the lock itself
        _quiet_libraries()
        from tune.sweep import resume_sweep

        started = time.monotonic()
        cfg, summary = resume_sweep(args.resume, console, num_samples=more)
        return _finish(args, cfg, summary, args.resume.resolve(), started, console)
    cfg = cfg.with_run_name()
    check_new_run(cfg, args.overwrite)  # a taken run.name is refused before torch and Ray load
    if args.overwrite:
        refuse_if_held(results_dir(cfg))  # at once; run_sweep takes the lock itself
    _quiet_libraries()
    from tune.sweep import prepare_sweep, run_sweep

    started = time.monotonic()
    prep = prepare_sweep(cfg, console, overwrite=args.overwrite)
    summary = run_sweep(prep, console, overwrite=args.overwrite)
    return _finish(args, prep.cfg, summary, results_dir(prep.cfg), started, console)


def _finish(args, cfg, summary: dict, out: Path, started: float, console: Console) -> int:
    """The sweep's closing lines and exit code, then the export unless `--no-export`."""
    best = summary["best"]
    took = duration(time.monotonic() - started) + (" this run" if args.resume else "")
    if summary["interrupted"]:
        return _interrupted(summary, out, cfg.search.num_samples, took, console)
    if best is None or summary["errored"] == len(summary["trials"]):
        return _every_trial_failed(summary, out)
    metric, trials = summary["metric"], len(summary["trials"])
    # What early stopping saved, and what the sweep cost: the two figures a user weighs.
    budget = trials * cfg.train.max_steps
    console.print(
        f"\n[bold]Sweep done[/]: {trials} trials, "
        f"{summary['stopped_early']} stopped early, {summary['errored']} errored; "
        f"{summary['steps_trained']} of {budget} steps trained, {took}. "
        f"Best {metric} {best[f'best_{metric}']:.4f} (trial {best['trial_id']})."
    )
    if args.no_export:
        console.print(f"Export later with: medtune export {out}", markup=False)
        return 0
    return _export(out, console, None)


def _num_samples(override: str) -> int:
    from tune.config import ConfigError

    value = override.partition("=")[2]
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(
            [f"search.num_samples: got {value!r}; give a whole number of trials >= 1"]
        )
    return int(value)


def _interrupted(summary: dict, out: Path, num_samples: int, took: str, console) -> int:
    """Exit 130 (as a shell reports Ctrl-C) with where the sweep stands; nothing exported."""
    best, metric = summary["best"], summary["metric"]
    so_far = (
        f" Best so far {metric} {best[f'best_{metric}']:.4f} (trial {best['trial_id']})."
        if best
        else ""
    )
    console.print(
        f"\n[bold]Sweep interrupted[/]: {num_samples - summary['unfinished']} of {num_samples} "
        f"trials ended, {summary['unfinished']} unfinished; {summary['steps_trained']} steps "
        f"trained, {took}.{so_far}\nNothing exported. Go on with: "
        f"medtune sweep --resume {escape(str(out))}"
    )
    return 130


def _every_trial_failed(summary: dict, out: Path) -> int:
    """Exit 1 (2 is for bad input) with each trial's reason, one line each."""
    trials = summary["trials"]
    print(f"medtune: every trial of {len(trials)} failed; nothing to export", file=sys.stderr)
    for n, t in enumerate(trials, 1):
        reason = t["error"] or "finished without an evaluation"
        print(f"medtune:   trial {n} ({t['trial_id']}): {reason}", file=sys.stderr)
    print(
        f"medtune: details in {out}/sweep_summary.json and each trial's error.txt; after a fix, "
        f"`medtune sweep --resume {out}` retries them",
        file=sys.stderr,
    )
    return 1


def _local_results(results: str, console: Console) -> Path:
    """The sweep's folder; given its URI under run.storage, a copy of it on this machine."""
    if "://" not in results:
        return Path(results)
    from tune.redact import redact_text
    from tune.storage import copy_sweep

    local = copy_sweep(results)
    console.print(f"Copied {redact_text(results)} without checkpoints to {local}", markup=False)
    return local


def _export(results: Path, console: Console, out: Path | None, trial: str | None = None) -> int:
    from tune.config import load_saved_config
    from tune.export_layout import check_sweep_finished, check_trial

    # A wrong or unfinished folder is refused before torch and Ray load (export_best checks
    # again for callers in Python).
    load_saved_config(results)
    if trial is None:
        check_sweep_finished(results.resolve())
    else:
        check_trial(results.resolve(), trial)
    with sweep_lock(results, "medtune export"):
        _quiet_libraries()
        from tune.export import export_best

        metrics = export_best(results, console, out=out, trial=trial)
    base, tuned = metrics["base"], metrics["tuned"]
    console.print("\n[bold]Test metrics[/]        base      tuned")
    for key in tuned:
        console.print(f"  {key:<16} {base[key]:>9.4f}  {tuned[key]:>9.4f}")
    where = out or results / "export"
    console.print(
        f"\nExported to [bold]{where}[/] (merged model, adapter/, metrics.json, README.md)"
    )
    return 0


def _overrides_last(argv: list[str]) -> list[str]:
    """Move `key=value` words after the options, so they may come anywhere on the line.

    argparse fills a `nargs="*"` positional once; `sweep a=b --no-export c=d` would otherwise
    be refused.
    """
    takes_value = {
        "--config",
        "--resume",
        "--out",
        "--port",
        "--host",
        "--max-new-tokens",
        "--system",
        "--trial",
    }
    options, overrides, i = [], [], 0
    while i < len(argv):
        word = argv[i]
        if word in takes_value and i + 1 < len(argv):
            options += argv[i : i + 2]
            i += 2
            continue
        is_override = "=" in word and not word.startswith("-") and "." in word.split("=")[0]
        (overrides if is_override else options).append(word)
        i += 1
    return options + overrides


def _quiet_libraries() -> None:
    """Keep the terminal to medtune's own lines; every library still logs to its files."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # honour verbose=0: no status tables
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    import optuna
    from transformers.utils import logging as hf_logging

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


if __name__ == "__main__":
    sys.exit(main())
