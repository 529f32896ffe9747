"""The real `medtune` executable: exit codes, one line per problem, --debug, --help."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

MEDTUNE = str(Path(sys.executable).parent / "medtune")


def run(args, cwd, env_extra=None, timeout=180):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [MEDTUNE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def snapshot(root: Path) -> dict:
    return (
        {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}
        if root.exists()
        else {}
    )


def assert_refused(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("medtune: error: ") for ln in lines), proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.fixture
def workdir(tmp_path, model_cache):
    results = tmp_path / "results"
    (results / "earlier").mkdir(parents=True)
    (results / "earlier" / "keep.txt").write_text("an earlier sweep")
    return tmp_path


TINY = ["model.name=tiny-random"]
# The corpus of bad inputs, in-process through `main`, is tests/tune/test_bad_inputs.py; these
# check the installed executable itself.


def test_overrides_may_come_between_options(workdir):
    proc = run(["sweep", "train.max_steps=0", "--no-export", "train.foo=1"], cwd=workdir)
    assert_refused(proc, "train.max_steps: got 0", "train.foo: unknown key")


def test_the_executable_exits_2_without_a_traceback(workdir):
    before = snapshot(workdir / "results")
    proc = run(["sweep", *TINY, "data.source=instruction", "data.path=/no/such.json"], cwd=workdir)
    assert_refused(proc, "data.path=/no/such.json: no such file or folder")
    assert snapshot(workdir / "results") == before


def test_debug_shows_the_traceback(workdir):
    proc = run(["sweep", "--debug", "train.foo=1"], cwd=workdir)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def test_help_lists_the_commands(workdir):
    proc = run(["--help"], cwd=workdir)
    assert proc.returncode == 0
    assert "sweep" in proc.stdout and "export" in proc.stdout


def test_a_second_ctrl_c_quits_with_130_and_no_traceback(monkeypatch, capsys):
    # The first Ctrl-C of a running sweep stops it gracefully (tests/tune/test_interrupt.py);
    # a second one, or one before Tune listens, arrives as KeyboardInterrupt.
    import tune.cli

    def interrupted(args, console):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune.cli, "_sweep", interrupted)
    assert tune.cli.main(["sweep", *TINY]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "medtune: interrupted"


NO_EXPORT = "not a medtune export (needs config.json and medtune_prompt.json)"
NOT_RESULTS = "not a medtune results folder (no medtune.yaml)"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sweep", "train.max_steps=0"], "train.max_steps: got 0"),
        (["sweep", "run.storage=ftp://bucket"], "'ftp://' is not a storage Ray can write to"),
        (["sweep", "data.source=table", "data.path=nope.csv"], "data.path=nope.csv: no such"),
        (["data", "inspect", "data.source=table", "data.path=nope.csv"], "data.path=nope.csv"),
        (["config", "scheduler.name=hyperband"], "scheduler.name: got 'hyperband'"),
        (["list", "nope"], "nope: does not exist"),
        (["sweep", "run.name=taken"], "run.name=taken: "),
        (["sweep", "--resume", "."], NOT_RESULTS),
        (["export", "."], NOT_RESULTS),
        (["generate", "."], NO_EXPORT),
        (["serve", "."], NO_EXPORT),
        (["generate", ".", "Why?", "--max-new-tokens", "0"], "--max-new-tokens 0: an answer"),
        (["serve", ".", "--port", "70000"], "--port 70000: not a TCP port; use 1-65535"),
        (["gguf", "."], NO_EXPORT),
        (["gguf", ".", "--type", "q4_k"], "--type q4_k: not a GGUF type medtune writes; use one"),
    ],
    ids=[
        "config",
        "storage",
        "data-path",
        "inspect",
        "config-command",
        "list",
        "taken",
        "resume",
        "export",
        "generate",
        "serve",
        "max-new-tokens",
        "serve-port",
        "gguf",
        "gguf-type",
    ],
)
def test_bad_input_is_answered_before_torch_and_ray_load(tmp_path, args, needle):
    # Bad input costs under a second: asserted on what the refusing process imported, not on
    # time (export, generate and serve took 6-7 s, config errors 1.8 s, when they imported
    # torch or Ray first). The same `main` the executable runs, in a fresh interpreter.
    (tmp_path / "results" / "taken").mkdir(parents=True)  # a run.name some sweep has taken
    code = (
        "import sys; from tune.cli import main; rc = main(sys.argv[1:]); "
        "print('torch' in sys.modules, 'ray' in sys.modules); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.split() == ["False", "False"], proc.stderr
    assert needle in proc.stderr
